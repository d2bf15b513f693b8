package tcpproxy

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
)

// TestOutcomesForOutlierDetection: a connect failure and a reset before
// any byte came back are failures of the endpoint; an answer is a
// success; a client that leaves before any answer says nothing.
func TestOutcomesForOutlierDetection(t *testing.T) {
	watch := func(ep *balancer.Endpoint) {
		ep.SetOutcomeWatch(&balancer.OutcomeWatch{Threshold: 100, Tripped: make(chan struct{}, 1)})
	}
	t.Run("reset before any byte", func(t *testing.T) {
		be := startBackend(t, func(c *net.TCPConn) {
			c.SetLinger(0)
			c.Close()
		})
		cluster, eps := newCluster("rst", be.addr())
		watch(eps[0])
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec})
		for range 3 {
			// The proxy passes the backend's reset on to the client, and
			// may do so before the client's connect has returned: that
			// connect then fails with ECONNRESET, a connection made all
			// the same.
			c, err := net.DialTimeout("tcp", addr, waitTimeout)
			if errors.Is(err, syscall.ECONNRESET) {
				continue
			}
			if err != nil {
				t.Fatalf("dial %s: %v", addr, err)
			}
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			io.ReadAll(c)
			c.Close()
		}
		rec.waitClosed(t, 3)
		if n := eps[0].ConsecutiveFailures(); n != 3 {
			t.Fatalf("%d consecutive failures after 3 resets, want 3", n)
		}
	})
	t.Run("connect refused", func(t *testing.T) {
		cluster, eps := newCluster("refused", refusedAddr(t))
		watch(eps[0])
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec, Retries: -1})
		for range 2 {
			c := dial(t, addr)
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			io.ReadAll(c)
			c.Close()
		}
		rec.waitClosed(t, 2)
		if n := eps[0].ConsecutiveFailures(); n != 2 {
			t.Fatalf("%d consecutive failures after 2 refused connects, want 2", n)
		}
	})
	t.Run("answer, and a client that leaves first", func(t *testing.T) {
		be := startBackend(t, echo)
		cluster, eps := newCluster("ok", be.addr())
		watch(eps[0])
		eps[0].Report(codes.NotFound) // an answer: a success
		for range 2 {
			eps[0].Report(codes.Unavailable)
		}
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec})
		c := dial(t, addr)
		c.Close() // nothing sent, nothing answered
		rec.waitClosed(t, 1)
		if n := eps[0].ConsecutiveFailures(); n != 2 {
			t.Fatalf("a client leaving changed the run: %d", n)
		}
		c = dial(t, addr)
		roundTrip(t, c, "hello")
		c.Close()
		rec.waitClosed(t, 2)
		if n := eps[0].ConsecutiveFailures(); n != 0 {
			t.Fatalf("%d consecutive failures after an answer, want 0", n)
		}
	})
}
