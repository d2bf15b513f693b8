package admin

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is the seeded store's clock: statuses changed at t0, and golden
// output is rendered at t0 + 3m12s.
var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// newStore returns an empty store.
func newStore(t *testing.T) *state.Store {
	t.Helper()
	s, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setStatus gives an endpoint of s a new status, as its pool's event does.
func setStatus(t *testing.T, s *state.Store, cluster, address string, st checker.Status) {
	t.Helper()
	e, err := s.Snapshot().Endpoint(nil, cluster, address)
	if err != nil || e == nil {
		t.Fatalf("endpoint %s of %s: %v, %v", address, cluster, e, err)
	}
	s.Handle([]event.Event{{Kind: event.EndpointUpdated, Cluster: cluster, Address: address, Weight: e.Weight,
		Source: e.Source, Check: e.Check, Status: st, Hint: e.Hint}})
}

// seed fills s with two clusters whose endpoints are in every state.
func seed(t *testing.T, s *state.Store) {
	t.Helper()
	hc := checker.Config{Mode: checker.ModeCheck}
	err := s.Update(func(w state.Writer) error {
		for _, c := range []*state.Cluster{
			{Name: "orders", LBPolicy: string(config.RoundRobin), PanicThreshold: 50, HealthCheck: hc},
			{Name: "payments", LBPolicy: string(config.LeastRequest), PanicThreshold: 50, Panic: true,
				HealthCheck: checker.Config{Mode: checker.ModeWatch}},
		} {
			if err := w.UpsertCluster(c); err != nil {
				return err
			}
		}
		for _, e := range []*state.Endpoint{
			{Cluster: "orders", Address: "127.0.0.1:50051", Weight: 1, Check: checker.ModeCheck,
				Status: checker.Status{Health: checker.Healthy, Since: t0.Add(-time.Hour), Successes: 2}},
			{Cluster: "orders", Address: "127.0.0.1:50052", Weight: 2, Check: checker.ModeCheck,
				Status: checker.Status{Health: checker.Unhealthy, Reason: "NOT_SERVING", Cause: checker.CauseAnswer,
					Since: t0, Failures: 1}},
			{Cluster: "orders", Address: "127.0.0.1:50053", Weight: 1, Check: checker.ModeCheck,
				Status: checker.Status{Health: checker.Draining, Since: t0.Add(3 * time.Minute)}},
			{Cluster: "payments", Address: "127.0.0.1:50061", Weight: 1, Check: checker.ModeWatch,
				Status: checker.Status{Health: checker.Unhealthy, Reason: "DEADLINE_EXCEEDED",
					Cause: checker.CauseTransport, Since: t0.Add(-26 * time.Hour), Failures: 3}},
			{Cluster: "payments", Address: "127.0.0.1:50062", Weight: 1, Check: checker.ModeWatch,
				Status: checker.Status{Health: checker.Pending, Since: t0.Add(3*time.Minute + 11*time.Second)}},
		} {
			if err := w.UpsertEndpoint(e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// fixedStats answers Stats for the seeded endpoints that have been probed.
func fixedStats(cluster, address string) (EndpointStats, bool) {
	switch address {
	case "127.0.0.1:50051":
		return EndpointStats{LastProbe: t0.Add(3*time.Minute + 10*time.Second), LastLatency: 1234 * time.Microsecond, Inflight: 3}, true
	case "127.0.0.1:50052":
		// Ramping up under slow start: a third of its weight of 2.
		return EndpointStats{LastProbe: t0.Add(3*time.Minute + 9*time.Second), LastLatency: 420 * time.Microsecond,
			EffectiveWeight: 2.0 / 3, HasEffectiveWeight: true}, true
	case "127.0.0.1:50053":
		return EndpointStats{Inflight: 1}, true
	case "127.0.0.1:50062": // a Watch endpoint: statuses pushed, never timed
		return EndpointStats{LastProbe: t0.Add(3*time.Minute + 11*time.Second)}, true
	case "127.0.0.1:50061":
		// Weighed by its load reports: 100/(0.5 + 2/100).
		return EndpointStats{LastProbe: t0.Add(3*time.Minute + 11*time.Second), LastLatency: 1500 * time.Millisecond,
			Load: &LoadStats{CPUUtilization: 0.9, ApplicationUtilization: 0.5, QPS: 100, EPS: 2,
				At: t0.Add(3*time.Minute + 10*time.Second), Weight: 100 / 0.52}}, true
	}
	return EndpointStats{}, false
}

// logBuffer is a concurrency-safe log destination.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// servers are the test servers by base URL.
var servers = map[string]*Server{}

// start serves a Server built from opts on 127.0.0.1:0 and returns it and
// its base URL; the server is shut down when the test ends.
func start(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, opts)
}

// serveOn serves a Server built from opts on ln until the test ends.
func serveOn(t *testing.T, ln net.Listener, opts Options) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		// Two answers of /clusters must be the same bytes.
		opts.Now = func() time.Time { return t0.Add(3*time.Minute + 12*time.Second) }
	}
	srv := New(opts)
	base := "http://" + ln.Addr().String()
	servers[base] = srv
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		delete(servers, base)
	})
	return srv, base
}

// get fetches url and returns the status code, headers and body.
func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return res.StatusCode, res.Header, body
}

// eventStream is a client following /events in a goroutine the test owns.
type eventStream struct {
	events chan Event
	done   chan struct{} // closed when Events returned, with err set
	err    error
}

func follow(t *testing.T, base string, opts EventsOptions) *eventStream {
	t.Helper()
	c, err := NewClient(base)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := &eventStream{events: make(chan Event, 1024), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		st.err = c.Events(ctx, opts, func(ev Event) error {
			st.events <- ev
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-st.done
	})
	return st
}

// next waits for the stream's next event.
func (st *eventStream) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-st.events:
		return ev
	case <-st.done:
		t.Fatalf("event stream ended: %v", st.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return Event{}
}

// quiet checks that no event is pending right now.
func (st *eventStream) quiet(t *testing.T) {
	t.Helper()
	select {
	case ev := <-st.events:
		t.Fatalf("unexpected event %d %s", ev.Seq, ev.Msg)
	default:
	}
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func contains(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
