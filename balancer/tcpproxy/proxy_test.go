package tcpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/ringhash"
)

func TestEcho(t *testing.T) {
	be := startBackend(t, echo)
	cluster, _ := newCluster("echo", be.addr())
	rec := &recorder{}
	_, addr := startProxy(t, cluster, Options{Metrics: rec})

	c := dial(t, addr)
	roundTrip(t, c, "hello")
	roundTrip(t, c, "again")
	c.CloseWrite()
	expectClosed(t, c)

	stats := rec.waitClosed(t, 1)
	want := ConnStats{Cluster: "echo", Endpoint: be.addr(), Outcome: OutcomeOK, Attempts: 1, BytesToUpstream: 10, BytesToClient: 10}
	got := stats[0]
	got.Duration = 0
	if got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}

// TestBytesExact sends large random payloads both ways at once and checks
// every byte, without and with an idle timeout (whose fallback copies in
// read-deadline windows).
func TestBytesExact(t *testing.T) {
	cases := []struct {
		name      string
		idle      time.Duration
		configure func(*Proxy)
	}{{"no idle timeout", 0, func(*Proxy) {}}}
	for _, m := range activityModes {
		cases = append(cases, struct {
			name      string
			idle      time.Duration
			configure func(*Proxy)
		}{"idle timeout, " + m.name, time.Second, m.configure})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := startBackend(t, echo)
			cluster, _ := newCluster("bulk", be.addr())
			rec := &recorder{}
			_, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: tc.idle}, tc.configure)

			const size = 16 << 20
			payload := make([]byte, size)
			rand.Read(payload)
			c := dial(t, addr)
			writeErr := make(chan error, 1)
			go func() {
				_, err := c.Write(payload)
				c.CloseWrite()
				writeErr <- err
			}()
			h := sha256.New()
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			n, err := io.Copy(h, c)
			if err != nil {
				t.Fatalf("read after %d bytes: %v", n, err)
			}
			if err := <-writeErr; err != nil {
				t.Fatalf("write: %v", err)
			}
			if n != size || !bytes.Equal(h.Sum(nil), sha256Sum(payload)) {
				t.Fatalf("received %d bytes with a different hash, want the %d bytes sent", n, size)
			}
			s := rec.waitClosed(t, 1)[0]
			if s.Outcome != OutcomeOK || s.BytesToUpstream != size || s.BytesToClient != size {
				t.Errorf("stats = %+v, want ok with %d bytes each way", s, size)
			}
		})
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// TestPacedTransferWithIdleTimeout streams across several idle ticks, so
// that, without kernel counters, the copy returns on its read deadline
// while data flows: no byte may be lost or duplicated when it restarts.
func TestPacedTransferWithIdleTimeout(t *testing.T) {
	for _, m := range activityModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			const chunk, chunks = 64 << 10, 300
			be := startBackend(t, func(c *net.TCPConn) {
				buf := make([]byte, chunk)
				for i := range chunks {
					for j := range buf {
						buf[j] = byte(i + j)
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				c.CloseWrite()
				io.Copy(io.Discard, c)
			})
			cluster, _ := newCluster("paced", be.addr())
			rec := &recorder{}
			// A 1s idle timeout ticks every 250ms: the 1.5s+ stream spans six
			// ticks. (With a much shorter timeout the test would fail when
			// the test process is starved of CPU for that long, since the
			// paced backend then really does go quiet.)
			_, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: time.Second}, m.configure)

			c := dial(t, addr)
			buf := make([]byte, chunk)
			for i := range chunks {
				c.SetReadDeadline(time.Now().Add(waitTimeout))
				if _, err := io.ReadFull(c, buf); err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				for j := range buf {
					if buf[j] != byte(i+j) {
						t.Fatalf("byte %d of chunk %d is %d, want %d", j, i, buf[j], byte(i+j))
					}
				}
			}
			expectClosed(t, c)
			c.CloseWrite()
			if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeOK {
				t.Errorf("outcome %q, want ok", s.Outcome)
			}
		})
	}
}

func TestHalfClose(t *testing.T) {
	t.Run("client closes first", func(t *testing.T) {
		// The backend answers only once the request has ended (FIN), like a
		// request/response protocol delimited by half-close.
		be := startBackend(t, func(c *net.TCPConn) {
			req, err := io.ReadAll(c)
			if err != nil {
				return
			}
			c.Write([]byte("response to " + string(req)))
			c.CloseWrite()
		})
		cluster, _ := newCluster("half", be.addr())
		_, addr := startProxy(t, cluster, Options{})

		c := dial(t, addr)
		c.Write([]byte("request"))
		if err := c.CloseWrite(); err != nil {
			t.Fatalf("CloseWrite: %v", err)
		}
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "response to request" {
			t.Fatalf("read %q, %v; want the response, then EOF", got, err)
		}
	})

	t.Run("server closes first", func(t *testing.T) {
		// The backend sends a banner and its FIN, then still reads what the
		// client sends until the client's FIN.
		received := make(chan string, 1)
		be := startBackend(t, func(c *net.TCPConn) {
			c.Write([]byte("banner"))
			c.CloseWrite()
			rest, _ := io.ReadAll(c)
			received <- string(rest)
		})
		cluster, _ := newCluster("half", be.addr())
		_, addr := startProxy(t, cluster, Options{})

		c := dial(t, addr)
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "banner" {
			t.Fatalf("read %q, %v; want the banner, then EOF", got, err)
		}
		if _, err := c.Write([]byte("after the server's FIN")); err != nil {
			t.Fatalf("write after the server's FIN: %v", err)
		}
		c.CloseWrite()
		select {
		case rest := <-received:
			if rest != "after the server's FIN" {
				t.Errorf("backend received %q", rest)
			}
		case <-time.After(waitTimeout):
			t.Fatal("backend never saw the client's FIN")
		}
	})
}

// TestResetPropagates checks that a reset on one side becomes a reset on the
// other rather than a clean FIN that would hide a truncated stream.
func TestResetPropagates(t *testing.T) {
	t.Run("backend resets", func(t *testing.T) {
		be := startBackend(t, func(c *net.TCPConn) {
			var b [1]byte
			io.ReadFull(c, b[:])
			c.Write([]byte("partial"))
			c.SetLinger(0)
			c.Close()
		})
		cluster, _ := newCluster("rst", be.addr())
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec})

		c := dial(t, addr)
		c.Write([]byte("x"))
		c.SetReadDeadline(time.Now().Add(waitTimeout))
		_, err := io.ReadAll(c)
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read ended with %v, want a reset", err)
		}
		if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeError {
			t.Errorf("outcome %q, want %q", s.Outcome, OutcomeError)
		}
	})

	t.Run("client resets", func(t *testing.T) {
		backendErr := make(chan error, 1)
		be := startBackend(t, func(c *net.TCPConn) {
			c.Write([]byte("ready"))
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			_, err := io.Copy(io.Discard, c)
			backendErr <- err
		})
		cluster, _ := newCluster("rst", be.addr())
		_, addr := startProxy(t, cluster, Options{})

		c := dial(t, addr)
		readN(t, c, len("ready"))
		c.SetLinger(0)
		c.Close()
		select {
		case err := <-backendErr:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("backend read ended with %v, want a reset", err)
			}
		case <-time.After(2 * waitTimeout):
			t.Fatal("backend connection never ended")
		}
	})
}

func TestSpreadsConnectionsOverEndpoints(t *testing.T) {
	names := []string{"a", "b", "c"}
	var addrs []string
	for _, n := range names {
		addrs = append(addrs, startBackend(t, named(n)).addr())
	}
	cluster, _ := newCluster("spread", addrs...)
	_, addr := startProxy(t, cluster, Options{})

	counts := map[string]int{}
	for range 30 {
		c := dial(t, addr)
		counts[readN(t, c, 1)]++
		c.Close()
	}
	for _, n := range names {
		if counts[n] != 10 {
			t.Errorf("connections per backend = %v, want 10 each (round robin per connection)", counts)
			break
		}
	}
}

// TestEveryPolicy runs connections through each shipped policy: all of
// them succeed and reach every endpoint, and least_request sees the open
// connections through Acquire and Release. The connections come from 30
// client addresses, which ring_hash spreads by.
func TestEveryPolicy(t *testing.T) {
	for _, name := range balancer.Policies() {
		t.Run(name, func(t *testing.T) {
			names := []string{"a", "b", "c"}
			var eps []*balancer.Endpoint
			for _, n := range names {
				eps = append(eps, balancer.NewEndpoint(startBackend(t, named(n)).addr()))
			}
			cluster := balancer.NewCluster(name)
			setHealthyWith(cluster, policy(name), eps...)
			_, addr := startProxy(t, cluster, Options{})

			reached := map[string]int{}
			var open []*net.TCPConn
			for k := range 30 {
				c := dialFrom(t, byte(2+k), addr)
				reached[readN(t, c, 1)]++
				open = append(open, c) // held open: least_request must spread them
			}
			for _, n := range names {
				if reached[n] == 0 {
					t.Errorf("endpoint %s never reached in 30 connections: %v", n, reached)
				}
			}
			if name == "least_request" {
				for n, count := range reached {
					if count > 15 {
						t.Errorf("least_request sent %d of 30 open connections to %s: %v", count, n, reached)
					}
				}
			}
			for _, c := range open {
				c.Close()
			}
		})
	}
}

// TestRingHashByClientIP: with ring_hash, every connection from one client
// IP address reaches the same endpoint, whatever its port; an evicted
// endpoint's clients move to others and nobody else's do; readmitted, its
// clients come back.
func TestRingHashByClientIP(t *testing.T) {
	names := []string{"a", "b", "c"}
	var eps []*balancer.Endpoint
	for _, n := range names {
		eps = append(eps, balancer.NewEndpoint(startBackend(t, named(n)).addr()))
	}
	cluster := balancer.NewCluster("sessions")
	rh := ringhash.Policy{}
	setHealthyWith(cluster, rh, eps...)
	_, addr := startProxy(t, cluster, Options{})

	const clients = 24
	reach := func(host byte) string {
		c := dialFrom(t, host, addr)
		defer c.Close()
		return readN(t, c, 1)
	}
	home := map[byte]string{}
	used := map[string]int{}
	for h := byte(2); h < 2+clients; h++ {
		home[h] = reach(h)
		used[home[h]]++
		for range 3 {
			if got := reach(h); got != home[h] {
				t.Fatalf("127.0.0.%d reached %s, then %s", h, home[h], got)
			}
		}
	}
	if len(used) < 2 {
		t.Fatalf("%d client addresses all reached %v", clients, used)
	}

	// Evict the endpoint with the most clients: the others stay members.
	gone := 0
	for i, n := range names {
		if used[n] > used[names[gone]] {
			gone = i
		}
	}
	members := make([]balancer.Member, len(eps))
	for i, ep := range eps {
		members[i] = balancer.Member{Endpoint: ep, Weight: 1, Healthy: i != gone}
	}
	cluster.Update(rh, 0, members)
	for h := byte(2); h < 2+clients; h++ {
		got := reach(h)
		switch {
		case home[h] == names[gone] && got == names[gone]:
			t.Errorf("127.0.0.%d still reached evicted %s", h, got)
		case home[h] != names[gone] && got != home[h]:
			t.Errorf("127.0.0.%d moved from %s to %s when %s was evicted", h, home[h], got, names[gone])
		}
	}
	setHealthyWith(cluster, rh, eps...)
	for h := byte(2); h < 2+clients; h++ {
		if got := reach(h); got != home[h] {
			t.Errorf("127.0.0.%d reached %s after the readmission, want %s again", h, got, home[h])
		}
	}
}

// TestFollowsSnapshot swaps the cluster's snapshot, then the cluster itself,
// mid-test: no new connection may reach an endpoint that left.
func TestFollowsSnapshot(t *testing.T) {
	bes := map[string]*backend{}
	for _, n := range []string{"a", "b", "c", "d"} {
		bes[n] = startBackend(t, named(n))
	}
	cluster, eps := newCluster("swap", bes["a"].addr(), bes["b"].addr())
	p, addr := startProxy(t, cluster, Options{})

	reach := func() string {
		c := dial(t, addr)
		defer c.Close()
		return readN(t, c, 1)
	}
	for range 4 {
		if got := reach(); got != "a" && got != "b" {
			t.Fatalf("reached %q before the swap, want a or b", got)
		}
	}

	setHealthy(cluster, balancer.NewEndpoint(bes["c"].addr()))
	eps[0].Close()
	eps[1].Close()
	before := bes["a"].accepted.Load() + bes["b"].accepted.Load()
	for range 6 {
		if got := reach(); got != "c" {
			t.Fatalf("reached %q after the snapshot swap, want c", got)
		}
	}

	other, _ := newCluster("other", bes["d"].addr())
	p.SetCluster(other)
	for range 6 {
		if got := reach(); got != "d" {
			t.Fatalf("reached %q after SetCluster, want d", got)
		}
	}
	if after := bes["a"].accepted.Load() + bes["b"].accepted.Load(); after != before {
		t.Errorf("removed endpoints accepted %d connections after the swap", after-before)
	}
}

func TestNoHealthyEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster *balancer.Cluster
	}{
		{"empty cluster", balancer.NewCluster("empty")},
		{"no cluster", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			p, addr := startProxy(t, tc.cluster, Options{Metrics: rec})
			c := dial(t, addr)
			expectClosed(t, c)
			s := rec.waitClosed(t, 1)[0]
			if s.Outcome != OutcomeNoHealthyUpstream || s.Attempts != 0 || s.Endpoint != "" {
				t.Errorf("stats = %+v, want no_healthy_upstream without attempts", s)
			}
			waitFor(t, "no active connection", func() bool { return p.ActiveConnections() == 0 })
		})
	}
}

// TestDialFailureRetried puts a refusing endpoint next to a live one: every
// client connection must still succeed.
func TestDialFailureRetried(t *testing.T) {
	live := startBackend(t, named("L"))
	dead := refusedAddr(t)
	cluster, _ := newCluster("retry", dead, live.addr())
	rec := &recorder{}
	_, addr := startProxy(t, cluster, Options{Metrics: rec})

	const conns = 20
	for i := range conns {
		c := dial(t, addr)
		if got := readN(t, c, 1); got != "L" {
			t.Fatalf("connection %d reached %q", i, got)
		}
		c.Close()
	}
	stats := rec.waitClosed(t, conns)
	if o := outcomes(stats); o[OutcomeOK] != conns {
		t.Errorf("outcomes = %v, want %d ok", o, conns)
	}
	failures := rec.dialFailures()
	if len(failures) == 0 {
		t.Fatal("no dial failure recorded: the refusing endpoint was never tried")
	}
	for _, f := range failures {
		if f != dead {
			t.Errorf("dial failure recorded for %s, want only %s", f, dead)
		}
	}
}

// TestDialTimeoutRetried uses an endpoint whose accept queue is full, so the
// kernel drops its SYNs and the dial times out.
func TestDialTimeoutRetried(t *testing.T) {
	blackhole := blackholeAddr(t)
	live := startBackend(t, named("L"))
	cluster, _ := newCluster("timeout", blackhole, live.addr())
	rec := &recorder{}
	_, addr := startProxy(t, cluster, Options{Metrics: rec, DialTimeout: 100 * time.Millisecond})

	// Round robin alternates: of two connections, at least one tries the
	// blackhole first.
	for i := range 2 {
		c := dial(t, addr)
		if got := readN(t, c, 1); got != "L" {
			t.Fatalf("connection %d reached %q", i, got)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.dialErrs) == 0 {
		t.Fatal("no dial failure recorded: the blackhole was never tried")
	}
	for _, err := range rec.dialErrs {
		if !errors.Is(err, context.DeadlineExceeded) && !isTimeoutErr(err) {
			t.Errorf("dial error %v, want a timeout", err)
		}
	}
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// blackholeAddr returns a loopback address whose SYNs are dropped: a
// listening socket with a backlog of 0 that never accepts, filled with one
// connection.
func blackholeAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatalf("listen: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("getsockname: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 5 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full: SYNs are now dropped
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("could not fill the accept queue of a backlog-0 listener; no blackhole on this kernel")
	return ""
}

func TestAllEndpointsRefuse(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retries   int
		endpoints int
		attempts  int
	}{
		{"default retries", 0, 4, 1 + DefaultRetries},
		{"retries disabled", -1, 4, 1},
		{"more retries than endpoints", 10, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []string
			for range tc.endpoints {
				addrs = append(addrs, refusedAddr(t))
			}
			cluster, _ := newCluster("dead", addrs...)
			rec := &recorder{}
			_, addr := startProxy(t, cluster, Options{Metrics: rec, Retries: tc.retries})

			c := dial(t, addr)
			expectClosed(t, c)
			s := rec.waitClosed(t, 1)[0]
			if s.Outcome != OutcomeConnectFailed || s.Attempts != tc.attempts {
				t.Errorf("stats = %+v, want connect_failed after %d attempts", s, tc.attempts)
			}
			failures := rec.dialFailures()
			if len(failures) != tc.attempts {
				t.Errorf("%d dial failures, want %d", len(failures), tc.attempts)
			}
			seen := map[string]bool{}
			for _, f := range failures {
				if seen[f] {
					t.Errorf("endpoint %s dialled twice for one connection", f)
				}
				seen[f] = true
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	for _, m := range activityModes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testIdleTimeout(t, m.name == "kernel counters", m.configure)
		})
	}
}

func testIdleTimeout(t *testing.T, kernel bool, configure func(*Proxy)) {
	const idle = 300 * time.Millisecond

	t.Run("idle pair closed", func(t *testing.T) {
		be := startBackend(t, echo)
		cluster, _ := newCluster("idle", be.addr())
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: idle}, configure)

		c := dial(t, addr)
		last := time.Now() // before the last bytes move
		roundTrip(t, c, "ping")
		expectClosed(t, c)
		if quiet := time.Since(last); quiet < idle {
			t.Errorf("closed after %v of silence, before the %v idle timeout", quiet, idle)
		}
		if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeIdleTimeout {
			t.Errorf("outcome %q, want %q", s.Outcome, OutcomeIdleTimeout)
		}
	})

	t.Run("busy pairs stay open", func(t *testing.T) {
		// Three pairs at once, busy both ways, client to backend only, and
		// backend to client only, each for three idle periods. The timeout
		// is longer here: a test process starved of CPU for a whole idle
		// timeout moves no byte, and the proxy would rightly see the pair
		// as idle.
		const busyIdle = 600 * time.Millisecond
		const tick, ticks = 20 * time.Millisecond, 90
		be := startBackend(t, func(c *net.TCPConn) {
			var mode [1]byte
			if _, err := io.ReadFull(c, mode[:]); err != nil {
				return
			}
			switch mode[0] {
			case 'e':
				echo(c)
			case 'd':
				io.Copy(io.Discard, c)
				c.CloseWrite()
			case 's':
				for range ticks {
					if _, err := c.Write([]byte{'.'}); err != nil {
						return
					}
					time.Sleep(tick)
				}
				c.CloseWrite()
				io.Copy(io.Discard, c)
			}
		})
		cluster, _ := newCluster("busy", be.addr())
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: busyIdle}, configure)

		var wg sync.WaitGroup
		errs := make(chan error, 3)
		for _, mode := range []byte("eds") {
			wg.Go(func() {
				c, err := net.DialTimeout("tcp", addr, waitTimeout)
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(waitTimeout))
				if _, err := c.Write([]byte{mode}); err != nil {
					errs <- err
					return
				}
				var b [1]byte
				for i := range ticks {
					switch mode {
					case 'e':
						_, err = c.Write([]byte{'.'})
						if err == nil {
							_, err = io.ReadFull(c, b[:])
						}
					case 'd':
						_, err = c.Write([]byte{'.'})
					case 's':
						_, err = io.ReadFull(c, b[:])
					}
					if err != nil {
						errs <- fmt.Errorf("mode %c, tick %d: %w", mode, i, err)
						return
					}
					if mode != 's' {
						time.Sleep(tick)
					}
				}
				c.(*net.TCPConn).CloseWrite()
				if _, err := io.Copy(io.Discard, c); err != nil {
					errs <- fmt.Errorf("mode %c: connection ended with %w, want a clean EOF", mode, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if o := outcomes(rec.waitClosed(t, 3)); o[OutcomeOK] != 3 {
			t.Errorf("outcomes = %v, want 3 ok: a busy pair was cut", o)
		}
	})

	t.Run("peer stops reading", func(t *testing.T) {
		// The backend floods a client that never reads: once the socket
		// buffers are full nothing moves, and the pair must not stay open.
		be := startBackend(t, func(c *net.TCPConn) {
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		})
		cluster, _ := newCluster("stall", be.addr())
		rec := &recorder{}
		p, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: idle}, configure)

		dial(t, addr) // and never read
		if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeIdleTimeout {
			t.Errorf("outcome %q, want %q", s.Outcome, OutcomeIdleTimeout)
		}
		waitFor(t, "no active connection", func() bool { return p.ActiveConnections() == 0 })
	})

	if !kernel {
		return // bytes already handed to the kernel are not watched
	}
	t.Run("slow reader drains after the copy ended", func(t *testing.T) {
		// The backend sends more than the socket buffers hold and ends; the
		// proxy's copy ends once the last byte is in its send buffer, and
		// the client then takes several idle timeouts to drain the rest.
		// It keeps acknowledging, so the pair stays.
		const size, step = 16 << 20, 64 << 10
		be := startBackend(t, func(c *net.TCPConn) {
			c.Write(make([]byte, size))
			c.CloseWrite()
			io.Copy(io.Discard, c)
		})
		cluster, _ := newCluster("slow", be.addr())
		rec := &recorder{}
		_, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: idle}, configure)

		c := dial(t, addr)
		buf := make([]byte, step)
		got, start := 0, time.Now()
		for {
			c.SetReadDeadline(time.Now().Add(waitTimeout))
			n, err := io.ReadFull(c, buf)
			got += n
			if err != nil {
				if got != size {
					t.Fatalf("read %d bytes then %v, want %d bytes", got, err, size)
				}
				break
			}
			time.Sleep(5 * time.Millisecond) // at most 12.8 MB/s
		}
		c.CloseWrite()
		if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeOK {
			t.Errorf("outcome %q after %v, want ok: a slow but steady reader was cut", s.Outcome, time.Since(start))
		}
	})
}

// TestSlowloris: clients that connect and send nothing hold a connection
// slot each until the idle timeout, and the proxy keeps serving others.
func TestSlowloris(t *testing.T) {
	be := startBackend(t, echo)
	cluster, _ := newCluster("loris", be.addr())
	rec := &recorder{}
	p, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: 300 * time.Millisecond, MaxConnections: 8})

	var silent []*net.TCPConn
	for range 5 {
		silent = append(silent, dial(t, addr))
	}
	waitFor(t, "silent connections accepted", func() bool { return p.ActiveConnections() == 5 })
	c := dial(t, addr)
	roundTrip(t, c, "still served")
	c.CloseWrite()
	expectClosed(t, c)

	for _, s := range silent {
		expectClosed(t, s)
	}
	waitFor(t, "no active connection", func() bool { return p.ActiveConnections() == 0 })
	if o := outcomes(rec.waitClosed(t, 6)); o[OutcomeIdleTimeout] != 5 || o[OutcomeOK] != 1 {
		t.Errorf("outcomes = %v, want 5 idle_timeout and 1 ok", o)
	}
}

func TestMaxConnections(t *testing.T) {
	be := startBackend(t, echo)
	cluster, _ := newCluster("limit", be.addr())
	rec := &recorder{}
	p, addr := startProxy(t, cluster, Options{Metrics: rec, MaxConnections: 2})

	c1, c2 := dial(t, addr), dial(t, addr)
	roundTrip(t, c1, "one")
	roundTrip(t, c2, "two")

	over := dial(t, addr)
	expectClosed(t, over)
	if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeOverLimit || s.Cluster != "limit" {
		t.Errorf("stats = %+v, want over_limit", s)
	}
	roundTrip(t, c2, "two still works")

	c1.Close()
	waitFor(t, "a free connection slot", func() bool { return p.ActiveConnections() == 1 })
	roundTrip(t, dial(t, addr), "three")
}

func TestShutdown(t *testing.T) {
	t.Run("waits for open connections", func(t *testing.T) {
		be := startBackend(t, echo)
		cluster, _ := newCluster("drain", be.addr())
		p, addr := startProxy(t, cluster, Options{})

		c := dial(t, addr)
		roundTrip(t, c, "before")
		done := make(chan error, 1)
		go func() { done <- p.Shutdown(context.Background()) }()

		waitFor(t, "the listener to close", func() bool {
			nc, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				nc.Close()
			}
			return err != nil
		})
		roundTrip(t, c, "during shutdown")
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned %v while a connection was open", err)
		default:
		}
		c.CloseWrite()
		expectClosed(t, c)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("Shutdown did not return after the last connection ended")
		}
	})

	t.Run("cuts connections at the deadline", func(t *testing.T) {
		be := startBackend(t, echo)
		cluster, _ := newCluster("drain", be.addr())
		rec := &recorder{}
		p, addr := startProxy(t, cluster, Options{Metrics: rec})

		c := dial(t, addr)
		roundTrip(t, c, "before")
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want the context's deadline error", err)
		}
		if n := p.ActiveConnections(); n != 0 {
			t.Errorf("%d connections active after Shutdown returned", n)
		}
		expectClosed(t, c)
		if s := rec.waitClosed(t, 1)[0]; s.Outcome != OutcomeShutdown {
			t.Errorf("outcome %q, want %q", s.Outcome, OutcomeShutdown)
		}
	})

	t.Run("serve after close", func(t *testing.T) {
		p := New(nil, Options{Logger: testLogger(t)})
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Serve(ln); err != nil {
			t.Errorf("Serve after Close: %v, want nil", err)
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener still open after Serve returned: %v", err)
		}
	})
}

func TestEndpointCloseCutsItsConnections(t *testing.T) {
	a, b := startBackend(t, named("a")), startBackend(t, named("b"))
	cluster, eps := newCluster("cut", a.addr(), b.addr())
	rec := &recorder{}
	_, addr := startProxy(t, cluster, Options{Metrics: rec})

	on := map[string][]*net.TCPConn{}
	for range 4 {
		c := dial(t, addr)
		name := readN(t, c, 1)
		on[name] = append(on[name], c)
	}
	if len(on["a"]) != 2 || len(on["b"]) != 2 {
		t.Fatalf("connections per backend: a=%d b=%d, want 2 each", len(on["a"]), len(on["b"]))
	}

	eps[0].Close()
	for _, c := range on["a"] {
		expectClosed(t, c)
	}
	for _, c := range on["b"] {
		roundTrip(t, c, "b is untouched")
	}
	if o := outcomes(rec.waitClosed(t, 2)); o[OutcomeEndpointClosed] != 2 {
		t.Errorf("outcomes = %v, want 2 endpoint_closed", o)
	}
	if n := eps[0].Inflight(); n != 0 {
		t.Errorf("closed endpoint still counts %d connections in flight", n)
	}
}

func TestInflightCounting(t *testing.T) {
	be := startBackend(t, echo)
	cluster, eps := newCluster("inflight", be.addr())
	_, addr := startProxy(t, cluster, Options{})

	var conns []*net.TCPConn
	for i := range 3 {
		c := dial(t, addr)
		roundTrip(t, c, "x")
		conns = append(conns, c)
		if n := eps[0].Inflight(); n != int64(i+1) {
			t.Fatalf("in flight = %d with %d connections open", n, i+1)
		}
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "in-flight count back to zero", func() bool { return eps[0].Inflight() == 0 })
}

// flakyListener fails its first accepts with a resource error, as a
// listener does when the process runs out of file descriptors.
type flakyListener struct {
	net.Listener
	failures atomic.Int64
	err      error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, l.err
	}
	return l.Listener.Accept()
}

func TestAcceptErrors(t *testing.T) {
	t.Run("temporary errors are retried", func(t *testing.T) {
		be := startBackend(t, echo)
		cluster, _ := newCluster("accept", be.addr())
		p := New(cluster, Options{Logger: testLogger(t)})
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := &flakyListener{Listener: inner, err: &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}}
		ln.failures.Store(3)
		served := make(chan error, 1)
		go func() { served <- p.Serve(ln) }()

		roundTrip(t, dial(t, inner.Addr().String()), "served after EMFILE")
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	t.Run("other errors end Serve", func(t *testing.T) {
		p := New(nil, Options{Logger: testLogger(t)})
		defer p.Close()
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := &flakyListener{Listener: inner, err: errors.New("listener broke")}
		ln.failures.Store(1)
		if err := p.Serve(ln); err == nil || !strings.Contains(err.Error(), "listener broke") {
			t.Errorf("Serve: %v, want the listener's error", err)
		}
	})

	t.Run("backoff stops at shutdown", func(t *testing.T) {
		p := New(nil, Options{Logger: testLogger(t)})
		inner, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln := &flakyListener{Listener: inner, err: &net.OpError{Op: "accept", Net: "tcp", Err: syscall.ENFILE}}
		ln.failures.Store(1 << 30)
		served := make(chan error, 1)
		go func() { served <- p.Serve(ln) }()
		waitFor(t, "a few failed accepts", func() bool { return ln.failures.Load() < 1<<30-3 })
		p.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		// 5ms doubling up to 1s: a busy loop would have made thousands of
		// calls by now.
		if calls := 1<<30 - ln.failures.Load(); calls > 50 {
			t.Errorf("%d accept calls: the backoff does not hold", calls)
		}
	})
}

func TestIsTemporary(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: syscall.EMFILE}, true},
		{&net.OpError{Op: "accept", Err: fmt.Errorf("accept4: %w", syscall.ENFILE)}, true},
		{syscall.ECONNABORTED, true},
		{&net.OpError{Op: "accept", Err: syscall.EBADF}, false},
		{net.ErrClosed, false},
		{errors.New("broken"), false},
		{&net.DNSError{IsTimeout: true}, true},
	} {
		if got := isTemporary(tc.err); got != tc.want {
			t.Errorf("isTemporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// fixedPicker returns its endpoints in order, then the last one forever.
type fixedPicker struct {
	seq []*balancer.Endpoint
	i   int
}

func (p *fixedPicker) Pick() *balancer.Endpoint {
	if len(p.seq) == 0 {
		return nil
	}
	ep := p.seq[min(p.i, len(p.seq)-1)]
	p.i++
	return ep
}

type fixedPolicy struct{ seq []*balancer.Endpoint }

func (fixedPolicy) Name() string { return "test_fixed" }
func (f fixedPolicy) Build([]balancer.Weighted) balancer.Picker {
	return &fixedPicker{seq: f.seq}
}

// TestPickUntried: the proxy's retries pick through Snapshot.PickHash,
// which a policy that does not hash answers with an endpoint not tried.
func TestPickUntried(t *testing.T) {
	a, b, c := balancer.NewEndpoint("a"), balancer.NewEndpoint("b"), balancer.NewEndpoint("c")
	members := func(eps ...*balancer.Endpoint) []balancer.Member {
		var m []balancer.Member
		for _, ep := range eps {
			m = append(m, balancer.Member{Endpoint: ep, Weight: 1, Healthy: true})
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		picks   []*balancer.Endpoint // what the policy answers, in order
		members []balancer.Member
		tried   []*balancer.Endpoint
		want    *balancer.Endpoint
	}{
		{"first pick", []*balancer.Endpoint{a}, members(a, b), nil, a},
		{"skips tried", []*balancer.Endpoint{a, b}, members(a, b), []*balancer.Endpoint{a}, b},
		{"policy stuck on a tried endpoint", []*balancer.Endpoint{a}, members(a, b), []*balancer.Endpoint{a}, b},
		{"policy stuck on tried endpoints", []*balancer.Endpoint{a, b}, members(a, b, c), []*balancer.Endpoint{a, b}, c},
		{"all tried", []*balancer.Endpoint{a}, members(a, b), []*balancer.Endpoint{a, b}, nil},
		{"nothing routable", nil, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := balancer.BuildSnapshot(fixedPolicy{seq: tc.picks}, 0, tc.members)
			if got := snap.PickHash(1, tc.tried); got != tc.want {
				t.Errorf("PickHash = %v, want %v", addrOf(got), addrOf(tc.want))
			}
		})
	}
}

func addrOf(ep *balancer.Endpoint) string {
	if ep == nil {
		return "<nil>"
	}
	return ep.Address()
}

// fakeConn stands for a connection in idle watch tests.
type fakeConn struct {
	net.Conn
	id int
}

// TestIdleWatch drives the idle decision tick by tick. Each step advances
// the clock, applies what the kernel counters (per connection) or the
// copies (per direction) reported since the last tick, and checks the
// verdict.
func TestIdleWatch(t *testing.T) {
	const idle = 400 * time.Millisecond
	const tick = idle / ticksPerIdle
	type step struct {
		after    time.Duration
		kernel   [2]uint64 // kernel counter growth per connection
		returns  [2]uint64 // io.Copy returns per direction
		busy     [2]uint64 // of which moved bytes
		finished [2]bool
		want     string // verdict prefix; "" for none
	}
	// quiet is a tick with nothing moving, the copies returning on their
	// read deadlines.
	quiet := func(after time.Duration, want string) step {
		return step{after: after, returns: [2]uint64{1, 1}, want: want}
	}
	for _, tc := range []struct {
		name   string
		kernel bool
		steps  []step
	}{
		{"idle after four quiet ticks", false, []step{
			quiet(tick, ""), quiet(tick, ""), quiet(tick, ""), quiet(tick, "idle"),
		}},
		{"bytes one way keep the pair open", false, []step{
			quiet(tick, ""), quiet(tick, ""), quiet(tick, ""),
			{after: tick, returns: [2]uint64{1, 1}, busy: [2]uint64{0, 1}},
			quiet(tick, ""), quiet(tick, ""), quiet(tick, ""), quiet(tick, "idle"),
		}},
		{"a long pause counts as one tick", false, []step{
			quiet(10*idle, ""), quiet(tick, ""), quiet(tick, ""), quiet(tick, "idle"),
		}},
		{"bytes waiting after a pause keep the pair open", false, []step{
			quiet(10*idle, ""), {after: tick, returns: [2]uint64{1, 1}, busy: [2]uint64{1, 0}},
			quiet(tick, ""), quiet(tick, ""), quiet(tick, ""), quiet(tick, "idle"),
		}},
		{"ticks alone are not enough", false, []step{
			quiet(tick/4, ""), quiet(tick/4, ""), quiet(tick/4, ""), quiet(tick/4, ""), quiet(tick/4, ""),
			quiet(idle, "idle"),
		}},
		{"a copy that never returns is stalled", false, []step{
			{after: tick, returns: [2]uint64{0, 1}},
			{after: tick, returns: [2]uint64{0, 1}, busy: [2]uint64{0, 1}},
			{after: tick, returns: [2]uint64{0, 1}, busy: [2]uint64{0, 1}},
			{after: tick, returns: [2]uint64{0, 1}, busy: [2]uint64{0, 1}, want: "stalled"},
		}},
		{"a finished copy is not stalled", false, []step{
			{after: tick, returns: [2]uint64{0, 1}, finished: [2]bool{true, false}},
			{after: tick, returns: [2]uint64{0, 1}, finished: [2]bool{true, false}, busy: [2]uint64{0, 1}},
			{after: tick, returns: [2]uint64{0, 1}, finished: [2]bool{true, false}},
			{after: tick, returns: [2]uint64{0, 1}, finished: [2]bool{true, false}},
			{after: tick, returns: [2]uint64{0, 1}, finished: [2]bool{true, false}},
			{after: tick, returns: [2]uint64{0, 1}, finished: [2]bool{true, false}, want: "idle"},
		}},
		{"kernel: idle after four quiet ticks", true, []step{
			{after: tick}, {after: tick}, {after: tick}, {after: tick, want: "idle"},
		}},
		{"kernel: bytes before the first tick are activity", true, []step{
			{after: tick, kernel: [2]uint64{5, 3}}, {after: tick}, {after: tick}, {after: tick},
			{after: tick, want: "idle"},
		}},
		{"kernel: either connection's counter keeps the pair open", true, []step{
			{after: tick}, {after: tick, kernel: [2]uint64{0, 5}}, {after: tick}, {after: tick},
			{after: tick, kernel: [2]uint64{7, 0}}, {after: tick}, {after: tick}, {after: tick},
			{after: tick, want: "idle"},
		}},
		{"kernel: blocked copies are not a stall while bytes are acknowledged", true, []step{
			{after: tick, kernel: [2]uint64{1, 0}}, {after: tick, kernel: [2]uint64{1, 0}},
			{after: tick, kernel: [2]uint64{1, 0}}, {after: tick, kernel: [2]uint64{1, 0}},
			{after: tick, kernel: [2]uint64{1, 0}}, {after: tick}, {after: tick}, {after: tick},
			{after: tick, want: "idle"},
		}},
		{"kernel: a long pause counts as one tick", true, []step{
			{after: 10 * idle}, {after: tick}, {after: tick}, {after: tick, want: "idle"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var counters [2]uint64
			activity := func(c net.Conn) (uint64, bool) {
				return counters[c.(*fakeConn).id], tc.kernel
			}
			pr := pair{conns: [2]net.Conn{&fakeConn{id: 0}, &fakeConn{id: 1}}}
			now := time.Unix(0, 0)
			w := newIdleWatch(idle, activity, tc.kernel, now)
			for i, st := range tc.steps {
				now = now.Add(st.after)
				for d := range 2 {
					counters[d] += st.kernel[d]
					pr.activity[d].returns.Add(st.returns[d])
					pr.activity[d].busy.Add(st.busy[d])
				}
				got := w.tick(&pr, st.finished, now)
				if !strings.HasPrefix(got, st.want) || (st.want == "") != (got == "") {
					t.Fatalf("step %d: verdict %q, want %q", i, got, st.want)
				}
			}
		})
	}
}

// TestKernelActivity checks that the kernel counters work here, so that the
// idle tests in "kernel counters" mode do test them.
func TestKernelActivity(t *testing.T) {
	be := startBackend(t, echo)
	c := dial(t, be.addr())
	before, ok := kernelActivity(c)
	if !ok {
		if runtime.GOOS == "linux" {
			t.Fatal("no TCP_INFO counters on Linux")
		}
		t.Skip("no kernel counters on " + runtime.GOOS)
	}
	roundTrip(t, c, "12345")
	waitFor(t, "the counters to count 5 bytes each way", func() bool {
		after, _ := kernelActivity(c)
		return after-before == 10
	})
}

// TestConcurrentClients runs many clients at once against several backends
// to shake out races in the per-connection state.
func TestConcurrentClients(t *testing.T) {
	var addrs []string
	for range 3 {
		addrs = append(addrs, startBackend(t, echo).addr())
	}
	cluster, eps := newCluster("many", addrs...)
	rec := &recorder{}
	p, addr := startProxy(t, cluster, Options{Metrics: rec, IdleTimeout: 5 * time.Second})

	const clients = 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, waitTimeout)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(waitTimeout))
			msg := bytes.Repeat([]byte{byte(i)}, 32<<10)
			for range 5 {
				if _, err := c.Write(msg); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					errs <- fmt.Errorf("client %d: echo mismatch or %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if o := outcomes(rec.waitClosed(t, clients)); o[OutcomeOK] != clients {
		t.Errorf("outcomes = %v, want %d ok", o, clients)
	}
	waitFor(t, "no active connection", func() bool { return p.ActiveConnections() == 0 })
	for _, ep := range eps {
		if n := ep.Inflight(); n != 0 {
			t.Errorf("endpoint %s: %d in flight after every client left", ep.Address(), n)
		}
	}
}
