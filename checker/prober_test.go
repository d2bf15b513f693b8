package checker

import (
	"net"
	"sync"
	"testing"
	"time"
)

// A backend that accepts connections and never answers (hung, or
// blackholed after a restart) is a timeout, whichever probe it is: the
// probe's own deadline, not grpc-go's connection attempt ending at the same
// moment, decides the reason. Found by the integration chaos suite, where
// a blackholed endpoint was evicted as DEADLINE_EXCEEDED or UNAVAILABLE
// depending on which of two equal timers fired first.
func TestCheckSilentPeerIsAlwaysDeadlineExceeded(t *testing.T) {
	addr := serveRaw(t, func(net.Conn) {}) // accepted, never answered
	var mu sync.Mutex
	var reasons []string
	cfg := Config{Mode: ModeCheck, Interval: 30 * time.Millisecond, Timeout: 30 * time.Millisecond,
		Thresholds: Thresholds{Unhealthy: 1000, Healthy: 1}}
	g, _, _ := testGroup(t, cfg, func(_ string, r Result) {
		mu.Lock()
		defer mu.Unlock()
		reasons = append(reasons, r.Reason)
	})
	g.Add(addr, Status{})
	const probes = 30
	waitFor(t, "30 probes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reasons) >= probes
	})
	g.Close()
	mu.Lock()
	defer mu.Unlock()
	for i, r := range reasons {
		if r != reasonDeadlineExceeded {
			t.Errorf("probe %d of a silent peer: reason %s; want DEADLINE_EXCEEDED every time (all: %v)", i, r, reasons)
			break
		}
	}
}
