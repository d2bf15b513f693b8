package checker

import (
	"context"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func watchConfig(interval, timeout time.Duration) Config {
	return Config{Mode: ModeWatch, Interval: interval, Timeout: timeout, Jitter: 0.1, Thresholds: Thresholds{Unhealthy: 3, Healthy: 2}}
}

// countingHealth is grpc-go's health server, counting calls.
type countingHealth struct {
	*health.Server
	watches, checks atomic.Int64
}

func newCountingHealth() *countingHealth { return &countingHealth{Server: health.NewServer()} }

func (c *countingHealth) Watch(req *healthgrpc.HealthCheckRequest, stream grpc.ServerStreamingServer[healthgrpc.HealthCheckResponse]) error {
	c.watches.Add(1)
	return c.Server.Watch(req, stream)
}

func (c *countingHealth) Check(ctx context.Context, req *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	c.checks.Add(1)
	return c.Server.Check(ctx, req)
}

// checkOnlyHealth implements Check but not Watch.
type checkOnlyHealth struct {
	healthgrpc.UnimplementedHealthServer
	status atomic.Int32
}

func (c *checkOnlyHealth) Check(context.Context, *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	return &healthgrpc.HealthCheckResponse{Status: healthgrpc.HealthCheckResponse_ServingStatus(c.status.Load())}, nil
}

// watchErrorHealth fails every Watch with err, or, if err is nil, never
// sends anything.
type watchErrorHealth struct {
	healthgrpc.UnimplementedHealthServer
	err error
}

func (w *watchErrorHealth) Watch(_ *healthgrpc.HealthCheckRequest, stream grpc.ServerStreamingServer[healthgrpc.HealthCheckResponse]) error {
	if w.err != nil {
		return w.err
	}
	<-stream.Context().Done()
	return stream.Context().Err()
}

func TestWatchPushesTakeEffectAtOnce(t *testing.T) {
	hs := newCountingHealth()
	b := startBackend(t, "", hs)
	// An interval of a minute: within the test, only pushes can change
	// the endpoint's health.
	g, sink, changes := testGroup(t, watchConfig(time.Minute, 5*time.Second), nil)
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)
	checkRecord(t, waitRecords(t, sink, "endpoint admitted", 1)[0], "INFO", admittedKeys, map[string]any{"check": "watch"})

	hs.SetServingStatus("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	st := waitHealth(t, g, b.addr, Unhealthy)
	if st.Reason != "NOT_SERVING" || st.Cause != CauseAnswer {
		t.Errorf("after pushed NOT_SERVING: %+v", st)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys,
		map[string]any{"check": "watch", "reason": "NOT_SERVING", "failures": 1, "healthy": 0, "total": 1})

	hs.SetServingStatus("", healthgrpc.HealthCheckResponse_SERVING)
	st = waitHealth(t, g, b.addr, Healthy)
	if st.Successes != 1 {
		t.Errorf("readmitted with %d successes; a pushed SERVING readmits at once", st.Successes)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint readmitted", 1)[0], "INFO", readmittedKeys, map[string]any{"check": "watch", "healthy": 1, "total": 1})
	if got := hs.watches.Load(); got != 1 {
		t.Errorf("%d Watch calls, want the one stream", got)
	}
	if s, _ := g.Stats(b.addr); !s.Result.Pushed || s.Mode != ModeWatch {
		t.Errorf("Stats = %+v, want a pushed result in watch mode", s)
	}
	_ = changes
}

// TestWatchLivenessKeepsHealthyStream runs many liveness intervals on a
// healthy backend: the Checks succeed, the one stream stays open, nothing
// is evicted (in particular no GOAWAY too_many_pings from the default
// server).
func TestWatchLivenessKeepsHealthyStream(t *testing.T) {
	hs := newCountingHealth()
	b := startBackend(t, "", hs)
	cfg := watchConfig(20*time.Millisecond, 2*time.Second)
	cfg.Liveness = LivenessCheck
	g, sink, _ := testGroup(t, cfg, nil)
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)
	waitFor(t, "10 liveness checks", func() bool { return hs.checks.Load() >= 10 })
	if got := hs.watches.Load(); got != 1 {
		t.Errorf("%d Watch calls, want one stream kept open", got)
	}
	if st, _ := g.Status(b.addr); st.Health != Healthy {
		t.Errorf("status %+v", st)
	}
	if n := len(sink.withMsg(t, "endpoint evicted")); n != 0 {
		t.Errorf("%d evictions of a healthy backend", n)
	}
}

func TestWatchStreamReopenedAfterRestart(t *testing.T) {
	hs := newCountingHealth()
	b := startBackend(t, "", hs)
	g, sink, _ := testGroup(t, watchConfig(200*time.Millisecond, 2*time.Second), nil)
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)

	b.srv.Stop() // the stream breaks; re-open attempts are refused
	st := waitHealth(t, g, b.addr, Unhealthy)
	if st.Reason != "UNAVAILABLE" || st.Cause != CauseTransport {
		t.Errorf("after stop: %+v", st)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys,
		map[string]any{"check": "watch", "reason": "UNAVAILABLE", "failures": 3})

	startBackend(t, b.addr, nil)
	st = waitHealth(t, g, b.addr, Healthy)
	if st.Successes != 1 {
		t.Errorf("readmitted with %d successes; the first pushed SERVING readmits", st.Successes)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint readmitted", 1)[0], "INFO", readmittedKeys, map[string]any{"check": "watch"})
}

// TestWatchDoesNotHoldGracefulStop: a backend's GracefulStop waits for its
// open streams; the prober must notice the GOAWAY and move its stream.
func TestWatchDoesNotHoldGracefulStop(t *testing.T) {
	b := startBackend(t, "", nil)
	g, sink, _ := testGroup(t, watchConfig(50*time.Millisecond, 2*time.Second), nil)
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)
	stopped := make(chan struct{})
	go func() { b.srv.GracefulStop(); close(stopped) }()
	waitFor(t, "GracefulStop to return", func() bool {
		select {
		case <-stopped:
			return true
		default:
			return false
		}
	})
	// The GOAWAY itself is no failure: the stream moved to a new
	// connection, and the eviction came from three counted re-open
	// failures, not from the liveness Check deeming the stream dead.
	waitHealth(t, g, b.addr, Unhealthy)
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys,
		map[string]any{"check": "watch", "reason": "UNAVAILABLE", "failures": 3})
}

func TestWatchUnimplementedFallsBackToCheck(t *testing.T) {
	hs := &checkOnlyHealth{}
	hs.status.Store(int32(healthgrpc.HealthCheckResponse_SERVING))
	b := startBackend(t, "", hs)
	var probes atomic.Int64
	g, sink, _ := testGroup(t, watchConfig(20*time.Millisecond, 2*time.Second), func(string, Result) { probes.Add(1) })
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)
	checkRecord(t, waitRecords(t, sink, "endpoint admitted", 1)[0], "INFO", admittedKeys, map[string]any{"check": "check"})

	hs.status.Store(int32(healthgrpc.HealthCheckResponse_NOT_SERVING))
	waitHealth(t, g, b.addr, Unhealthy)
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys, map[string]any{"check": "check", "reason": "NOT_SERVING"})
	n := probes.Load()
	waitFor(t, "more polls", func() bool { return probes.Load() >= n+5 })

	falls := sink.withMsg(t, msgWatchFallback)
	if len(falls) != 1 {
		t.Fatalf("%d fallback records, want 1", len(falls))
	}
	checkRecord(t, falls[0], "WARN", []string{"cluster", "endpoint", "check", "reason"}, map[string]any{"check": "watch", "reason": "UNIMPLEMENTED"})
	if s, _ := g.Stats(b.addr); s.Mode != ModeCheck {
		t.Errorf("Stats.Mode = %v after the fallback", s.Mode)
	}
}

func TestWatchNoHealthService(t *testing.T) {
	for _, serve := range []bool{false, true} {
		name := "evict"
		if serve {
			name = "serve"
		}
		t.Run(name, func(t *testing.T) {
			b := startBackend(t, "", noHealth)
			cfg := watchConfig(20*time.Millisecond, 2*time.Second)
			if serve {
				cfg.OnUnimplemented = UnimplementedServe
			}
			var probes atomic.Int64
			g, sink, _ := testGroup(t, cfg, func(string, Result) { probes.Add(1) })
			g.Add(b.addr, Status{})
			if serve {
				waitHealth(t, g, b.addr, Healthy)
				checkRecord(t, waitRecords(t, sink, "endpoint admitted", 1)[0], "INFO", admittedKeys, map[string]any{"check": "check"})
			} else {
				st := waitHealth(t, g, b.addr, Unhealthy)
				if st.Reason != "UNIMPLEMENTED" || st.Cause != CauseAnswer {
					t.Errorf("status %+v", st)
				}
				checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", append(evictedKeys, "hint"),
					map[string]any{"check": "check", "reason": "UNIMPLEMENTED", "hint": hintUnimplemented})
			}
			waitFor(t, "5 polls", func() bool { return probes.Load() >= 5 })
			if n := len(sink.withMsg(t, msgWatchFallback)); n != 1 {
				t.Errorf("%d fallback records, want 1", n)
			}
			wantServed := 0
			if serve {
				wantServed = 1
			}
			if n := len(sink.withMsg(t, msgServedAnyway)); n != wantServed {
				t.Errorf("%d served-anyway records, want %d", n, wantServed)
			}
		})
	}
}

func TestWatchServiceUnknownThenRegistered(t *testing.T) {
	b := startBackend(t, "", nil)
	cfg := watchConfig(time.Minute, 5*time.Second)
	cfg.Service = "orders"
	g, sink, _ := testGroup(t, cfg, nil)
	g.Add(b.addr, Status{})
	st := waitHealth(t, g, b.addr, Unhealthy)
	if st.Reason != "SERVICE_UNKNOWN" || st.Cause != CauseAnswer {
		t.Errorf("status %+v", st)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", append(evictedKeys, "hint"), map[string]any{"reason": "SERVICE_UNKNOWN", "failures": 1})
	b.set("orders", healthgrpc.HealthCheckResponse_SERVING) // pushed on the open stream
	waitHealth(t, g, b.addr, Healthy)
}

func TestWatchAttemptFailures(t *testing.T) {
	tests := []struct {
		name   string
		hs     healthgrpc.HealthServer
		reason string
		cause  Cause
		fails  int
	}{
		{"answered error is authoritative", &watchErrorHealth{err: status.Error(codes.PermissionDenied, "no")}, "PERMISSION_DENIED", CauseAnswer, 1},
		{"ended without a status", &watchErrorHealth{err: nil}, "DEADLINE_EXCEEDED", CauseTransport, 3},
		{"server returns OK at once", watchReturnsOK{}, "UNAVAILABLE", CauseTransport, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startBackend(t, "", tt.hs)
			g, sink, _ := testGroup(t, watchConfig(50*time.Millisecond, 100*time.Millisecond), nil)
			g.Add(b.addr, Status{})
			st := waitHealth(t, g, b.addr, Unhealthy)
			if st.Reason != tt.reason || st.Cause != tt.cause || st.Failures != tt.fails {
				t.Errorf("status %+v, want reason %s cause %v failures %d", st, tt.reason, tt.cause, tt.fails)
			}
			checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys, map[string]any{"check": "watch", "reason": tt.reason})
		})
	}
}

type watchReturnsOK struct {
	healthgrpc.UnimplementedHealthServer
}

func (watchReturnsOK) Watch(*healthgrpc.HealthCheckRequest, grpc.ServerStreamingServer[healthgrpc.HealthCheckResponse]) error {
	return nil
}

// relay forwards TCP connections to a target until blackholed: then it
// keeps every connection open but forwards nothing, and new connections
// are accepted and left silent, like a host that vanished from the network.
type relay struct {
	addr      string
	blackhole atomic.Bool
	lis       net.Listener
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
	accepted  []net.Conn // the prober-facing ends
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	r := &relay{lis: listen(t, "")}
	r.addr = r.lis.Addr().String()
	r.wg.Go(func() {
		for {
			c, err := r.lis.Accept()
			if err != nil {
				return
			}
			r.track(c)
			r.mu.Lock()
			r.accepted = append(r.accepted, c)
			r.mu.Unlock()
			if r.blackhole.Load() {
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			r.track(u)
			r.wg.Go(func() { r.forward(u, c) })
			r.wg.Go(func() { r.forward(c, u) })
		}
	})
	t.Cleanup(func() {
		_ = r.lis.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			_ = c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *relay) track(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns = append(r.conns, c)
}

func (r *relay) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !r.blackhole.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if err != io.EOF {
				_ = src.Close()
			}
			_ = dst.Close()
			return
		}
	}
}

func TestWatchBlackholeEvictsAtOnce(t *testing.T) {
	b := startBackend(t, "", nil)
	r := startRelay(t, b.addr)
	// The relay keeps the TCP connection up: only a Check sees through it.
	cfg := watchConfig(100*time.Millisecond, 300*time.Millisecond)
	cfg.Liveness = LivenessCheck
	g, sink, _ := testGroup(t, cfg, nil)
	g.Add(r.addr, Status{})
	waitHealth(t, g, r.addr, Healthy)

	r.blackhole.Store(true)
	st := waitHealth(t, g, r.addr, Unhealthy)
	// Evicted by the liveness Check at once (1 failure), not after three
	// counted failures.
	if st.Reason != "DEADLINE_EXCEEDED" || st.Cause != CauseTransport || st.Failures != 1 {
		t.Errorf("after blackhole: %+v, want DEADLINE_EXCEEDED transport with 1 failure", st)
	}
	checkRecord(t, waitRecords(t, sink, "endpoint evicted", 1)[0], "WARN", evictedKeys,
		map[string]any{"check": "watch", "reason": "DEADLINE_EXCEEDED", "failures": 1, "healthy": 0, "total": 1})

	r.blackhole.Store(false) // the path heals: a new connection gets through
	waitHealth(t, g, r.addr, Healthy)
	checkRecord(t, waitRecords(t, sink, "endpoint readmitted", 1)[0], "INFO", readmittedKeys, map[string]any{"check": "watch"})
}

// TestWatchFlappingReportsEveryTransition: a backend flipping as fast as
// it can is reported transition by transition, in order, each one an
// eviction or a readmission of the state before it, and the last change
// leaves the endpoint as the backend ended.
func TestWatchFlappingReportsEveryTransition(t *testing.T) {
	b := startBackend(t, "", nil)
	g, _, changes := testGroup(t, watchConfig(time.Minute, 5*time.Second), nil)
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)

	for range 200 {
		b.set("", healthgrpc.HealthCheckResponse_NOT_SERVING)
		time.Sleep(100 * time.Microsecond)
		b.set("", healthgrpc.HealthCheckResponse_SERVING)
		time.Sleep(100 * time.Microsecond)
	}
	waitHealth(t, g, b.addr, Healthy)
	got := changes.transitions(b.addr)
	if len(got) < 10 {
		t.Fatalf("only %d transitions observed; the test did not flap", len(got))
	}
	for i, tr := range got {
		want := Admitted
		switch {
		case i > 0 && i%2 == 1:
			want = Evicted
		case i > 0:
			want = Readmitted
		}
		if tr != want {
			t.Fatalf("transition %d of %v is %v, want %v", i, got, tr, want)
		}
	}
	if got[len(got)-1] != Readmitted {
		t.Errorf("last transition %v, want readmitted", got[len(got)-1])
	}
}

// TestReconfigureThresholdsKeepsStreams: a change of the thresholds alone
// restarts no prober and reopens no Watch stream, and the new thresholds
// take effect at once.
func TestReconfigureThresholdsKeepsStreams(t *testing.T) {
	hs := newCountingHealth()
	b := startBackend(t, "", hs)
	cfg := watchConfig(time.Minute, 5*time.Second)
	g, _, changes := testGroup(t, cfg, nil)
	g.Add(b.addr, Status{})
	waitHealth(t, g, b.addr, Healthy)
	g.mu.RLock()
	ep := g.endpoints[b.addr]
	g.mu.RUnlock()
	done, conn := ep.done, ep.conn

	cfg.Thresholds = Thresholds{Unhealthy: 7, Healthy: 5}
	g.Reconfigure(cfg)
	if ep.done != done || ep.conn != conn {
		t.Fatal("Reconfigure of the thresholds restarted the prober or replaced its connection")
	}
	if got := *g.thresholds.Load(); got != cfg.Thresholds {
		t.Errorf("thresholds in force %+v, want %+v", got, cfg.Thresholds)
	}
	hs.SetServingStatus("", healthgrpc.HealthCheckResponse_NOT_SERVING)
	waitHealth(t, g, b.addr, Unhealthy)
	hs.SetServingStatus("", healthgrpc.HealthCheckResponse_SERVING)
	waitHealth(t, g, b.addr, Healthy)
	if n := hs.watches.Load(); n != 1 {
		t.Errorf("%d Watch streams opened, want the one that was open before Reconfigure", n)
	}
	if got := changes.transitions(b.addr); !slices.Equal(got, []Transition{Admitted, Evicted, Readmitted}) {
		t.Errorf("transitions %v", got)
	}

	// The state machine uses the new thresholds: an evicted endpoint needs
	// five successes in a row.
	st := Status{Health: Unhealthy, Reason: "UNAVAILABLE", Cause: CauseTransport}
	for i := range 5 {
		var tr Transition
		st, tr = st.Next(Result{OK: true}, *g.thresholds.Load(), time.Now())
		if (tr == Readmitted) != (i == 4) {
			t.Fatalf("success %d: transition %v", i+1, tr)
		}
	}
}
