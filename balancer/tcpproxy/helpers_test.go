package tcpproxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
	_ "github.com/vigil-proxy/vigil/balancer/policies"
)

func TestMain(m *testing.M) {
	// The benchmarks run the proxy in a child process (see bench_test.go):
	// the test binary re-executes itself in that role.
	if os.Getenv(benchHelperEnv) != "" {
		os.Exit(runBenchHelper())
	}
	goleak.VerifyTestMain(m)
}

// waitTimeout bounds every wait-for-condition: generous, since tests run
// under -race on a loaded two-core machine. Waits normally end in
// milliseconds.
const waitTimeout = 10 * time.Second

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitTimeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// policy returns the registered policy called name.
func policy(name string) balancer.Policy {
	p, ok := balancer.PolicyByName(name)
	if !ok {
		panic("policy " + name + " is not registered")
	}
	return p
}

// newCluster returns a cluster whose endpoints are addrs, all healthy.
func newCluster(name string, addrs ...string) (*balancer.Cluster, []*balancer.Endpoint) {
	c := balancer.NewCluster(name)
	eps := make([]*balancer.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = balancer.NewEndpoint(a)
	}
	setHealthy(c, eps...)
	return c, eps
}

// setHealthy makes eps the cluster's members, all healthy, balanced round
// robin.
func setHealthy(c *balancer.Cluster, eps ...*balancer.Endpoint) {
	setHealthyWith(c, policy("round_robin"), eps...)
}

func setHealthyWith(c *balancer.Cluster, pol balancer.Policy, eps ...*balancer.Endpoint) {
	members := make([]balancer.Member, len(eps))
	for i, ep := range eps {
		members[i] = balancer.Member{Endpoint: ep, Weight: 1, Healthy: true}
	}
	c.Update(pol, 0, members)
}

// backend is a real TCP server on 127.0.0.1 running handler per connection.
type backend struct {
	ln       net.Listener
	accepted atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func startBackend(t testing.TB, handler func(*net.TCPConn)) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	b := &backend{ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			b.accepted.Add(1)
			b.mu.Lock()
			b.conns[conn] = struct{}{}
			b.wg.Add(1)
			b.mu.Unlock()
			go func() {
				defer b.wg.Done()
				handler(conn.(*net.TCPConn))
				conn.Close()
				b.mu.Lock()
				delete(b.conns, conn)
				b.mu.Unlock()
			}()
		}
	}()
	t.Cleanup(b.stop)
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

// stop closes the listener and every open connection and waits for the
// handlers to return.
func (b *backend) stop() {
	b.once.Do(func() {
		b.ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
}

// echo copies a connection back to itself and forwards the FIN.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

// named first writes name, then behaves as echo: a client learns which
// backend it reached.
func named(name string) func(*net.TCPConn) {
	return func(c *net.TCPConn) {
		if _, err := c.Write([]byte(name)); err != nil {
			return
		}
		echo(c)
	}
}

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startProxy serves p on a fresh loopback listener and closes it at cleanup,
// checking that Serve returned nil. configure runs before Serve.
func startProxy(t testing.TB, cluster *balancer.Cluster, opts Options, configure ...func(*Proxy)) (*Proxy, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	p := New(cluster, opts)
	for _, f := range configure {
		f(p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return p, ln.Addr().String()
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// dial connects to addr and closes the connection at cleanup.
func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// dialFrom dials addr from the loopback address 127.0.0.<host> (any
// port): on Linux all of 127.0.0.0/8 is the loopback interface, so a test
// can be many clients with distinct IP addresses.
func dialFrom(t testing.TB, host byte, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{Timeout: waitTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from 127.0.0.%d: %v", addr, host, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// readN reads exactly n bytes from c.
func readN(t testing.TB, c net.Conn, n int) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(buf)
}

// roundTrip writes msg to an echoing connection and checks it comes back.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if got := readN(t, c, len(msg)); got != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

// expectClosed checks that the peer closes c (FIN or reset) within
// waitTimeout, without sending anything more, and returns the read error.
func expectClosed(t testing.TB, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitTimeout))
	var buf [64]byte
	n, err := c.Read(buf[:])
	if n > 0 {
		t.Fatalf("read %q, want the connection closed", buf[:n])
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want EOF or a reset within %v", err, waitTimeout)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want EOF or a reset", err)
	}
	return err
}

// recorder is a Metrics that keeps every event.
type recorder struct {
	mu         sync.Mutex
	opened     []string
	dialFailed []string
	dialErrs   []error
	closed     []ConnStats
}

func (r *recorder) ConnectionOpened(cluster, endpoint string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened = append(r.opened, endpoint)
}

func (r *recorder) DialFailed(cluster, endpoint string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dialFailed = append(r.dialFailed, endpoint)
	r.dialErrs = append(r.dialErrs, err)
}

func (r *recorder) ConnectionClosed(s ConnStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = append(r.closed, s)
}

// waitClosed waits until n connections were reported closed and returns
// their stats.
func (r *recorder) waitClosed(t testing.TB, n int) []ConnStats {
	t.Helper()
	var got []ConnStats
	waitFor(t, "connections reported closed", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		got = append([]ConnStats(nil), r.closed...)
		return len(got) >= n
	})
	return got
}

func (r *recorder) dialFailures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dialFailed...)
}

// outcomes counts the outcomes in stats.
func outcomes(stats []ConnStats) map[Outcome]int {
	m := map[Outcome]int{}
	for _, s := range stats {
		m[s.Outcome]++
	}
	return m
}

// activityModes are the two sources of activity of the idle watch: the
// kernel's counters, and the copies' own reports used where the kernel's
// are not available.
var activityModes = []struct {
	name      string
	configure func(*Proxy)
}{
	{"kernel counters", func(*Proxy) {}},
	{"copy reports", func(p *Proxy) {
		p.activity = nil
	}},
}
