package filewatch

import (
	"path/filepath"
	"testing"
	"time"
)

// A steady stream of writes, each closer to the last than the debounce,
// must not postpone the reload for as long as it lasts: a change is
// reported at most ten debounces after the first write of a burst. Found
// by the integration chaos suite's reload storm (200 writes a second for
// 3s brought no reload at all).
func TestSteadyWritesDoNotStarveReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	write(t, path, "0")
	changes := watch(t, path) // debounce 20ms: a change within 200ms
	start := time.Now()
	for i := 0; time.Since(start) < time.Second; i++ {
		write(t, path, string(rune('a'+i%26)))
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(changes); n < 2 {
		t.Fatalf("%d changes reported during a second of writes every 5ms; want one every 200ms or so", n)
	}
}
