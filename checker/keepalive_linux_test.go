package checker

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// silence makes the relay's prober-facing connections a blackhole at the
// TCP level, the way a powered-off host or a dropping firewall is: a
// drop-all socket filter discards every segment that arrives, before the
// kernel could acknowledge it, and nothing is forwarded any more. Socket
// filters need no privilege, unlike iptables.
func (r *relay) silence(t *testing.T) {
	t.Helper()
	r.blackhole.Store(true)
	dropAll := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	prog := unix.SockFprog{Len: uint16(len(dropAll)), Filter: &dropAll[0]}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.accepted {
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog)
		}); err != nil || serr != nil {
			t.Fatalf("attach drop-all filter: %v %v", err, serr)
		}
	}
}

// TestWatchKeepaliveEvictsSilentHost: with the default liveness, a quiet
// Watch stream costs no RPC at all, and a backend whose host stops
// answering at the TCP level is evicted at once by the kernel's keepalive,
// within interval + timeout (in the kernel's whole seconds), then
// readmitted when the path heals.
func TestWatchKeepaliveEvictsSilentHost(t *testing.T) {
	hs := newCountingHealth()
	b := startBackend(t, "", hs)
	r := startRelay(t, b.addr)
	cfg := watchConfig(time.Second, 500*time.Millisecond)
	g, sink, _ := testGroup(t, cfg, nil)
	g.Add(r.addr, Status{})
	waitHealth(t, g, r.addr, Healthy)

	// Several intervals of a quiet stream: no Check, no second Watch.
	quiet := time.Now()
	for time.Since(quiet) < 3*cfg.Interval {
		time.Sleep(cfg.Interval / 4)
		if st, _ := g.Status(r.addr); st.Health != Healthy {
			t.Fatalf("quiet healthy stream: %+v", st)
		}
	}
	if c, w := hs.checks.Load(), hs.watches.Load(); c != 0 || w != 1 {
		t.Errorf("quiet stream cost %d Checks and %d Watches, want 0 and 1", c, w)
	}

	start := time.Now()
	r.silence(t)
	st := waitHealth(t, g, r.addr, Unhealthy)
	took := time.Since(start)
	if st.Reason != "DEADLINE_EXCEEDED" || st.Cause != CauseTransport || st.Failures != 1 {
		t.Errorf("after the host went silent: %+v, want DEADLINE_EXCEEDED transport with 1 failure", st)
	}
	// The bound counts from the last byte received, which is before now;
	// the slack is for a loaded machine.
	if bound := keepaliveBound(cfg); took > bound+time.Second {
		t.Errorf("evicted %v after the host went silent, want within %v", took, bound)
	}
	rec := waitRecords(t, sink, "endpoint evicted", 1)[0]
	checkRecord(t, rec, "WARN", evictedKeys, map[string]any{"check": "watch", "reason": "DEADLINE_EXCEEDED", "failures": 1})
	if e, _ := rec["error"].(string); !strings.Contains(e, "connection timed out") {
		t.Errorf("eviction record's error %q does not say the connection timed out", e)
	}

	r.blackhole.Store(false) // new connections get through again
	waitHealth(t, g, r.addr, Healthy)
}

// TestDiedOfKeepalive: the kernel's ETIMEDOUT is found through the probe
// connection's error chain, never in a message.
func TestDiedOfKeepalive(t *testing.T) {
	readErr := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}
	died := &ProbeError{Kind: KindBroken, Status: status.New(codes.Unavailable, "connection error"), Err: fmt.Errorf("read: %w", readErr)}
	if !diedOfKeepalive(died) {
		t.Errorf("diedOfKeepalive(%v) = false, want true", died)
	}
	for _, err := range []error{
		status.Error(codes.Unavailable, "connection error: transport: read: "+syscall.ETIMEDOUT.Error()),
		&ProbeError{Kind: KindTimeout, Status: status.New(codes.DeadlineExceeded, "deadline")},
		nil,
	} {
		if diedOfKeepalive(err) {
			t.Errorf("diedOfKeepalive(%v) = true, want false", err)
		}
	}
}
