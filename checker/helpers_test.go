package checker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// listen opens a TCP listener on 127.0.0.1:0, or on addr if given.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var lis net.Listener
	var err error
	// Rebinding a port just released can race with the kernel; retry briefly.
	for range 100 {
		if lis, err = net.Listen("tcp", addr); err == nil {
			return lis
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("listen %s: %v", addr, err)
	return nil
}

// backend is a real gRPC server with grpc-go's health service.
type backend struct {
	addr   string
	srv    *grpc.Server
	health *health.Server
}

// startBackend serves grpc-go's health service on addr ("" for a new port)
// with service "" SERVING; hs may replace the health service (nil: the
// standard one; noHealth: none at all).
func startBackend(t testing.TB, addr string, hs healthgrpc.HealthServer) *backend {
	t.Helper()
	lis := listen(t, addr)
	b := &backend{addr: lis.Addr().String(), srv: grpc.NewServer()}
	switch hs {
	case nil:
		b.health = health.NewServer()
		healthgrpc.RegisterHealthServer(b.srv, b.health)
	case noHealth:
	default:
		healthgrpc.RegisterHealthServer(b.srv, hs)
	}
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(b.srv.Stop)
	return b
}

// noHealth asks startBackend for a server without a health service.
var noHealth healthgrpc.HealthServer = &struct {
	healthgrpc.UnimplementedHealthServer
}{}

func (b *backend) set(service string, s healthgrpc.HealthCheckResponse_ServingStatus) {
	b.health.SetServingStatus(service, s)
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("client for %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// logSink collects JSON log records.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func newLogger() (*slog.Logger, *logSink) {
	s := &logSink{}
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug})), s
}

// records decodes every record logged so far.
func (s *logSink) records(t testing.TB) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	dec := json.NewDecoder(bytes.NewReader(s.buf.Bytes()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("log output is not JSON lines: %v\n%s", err, s.buf.String())
		}
		out = append(out, m)
	}
	return out
}

// withMsg returns the records with message msg.
func (s *logSink) withMsg(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, r := range s.records(t) {
		if r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// keys lists a record's keys but time, sorted.
func keys(rec map[string]any) []string {
	var ks []string
	for k := range rec {
		if k != "time" {
			ks = append(ks, k)
		}
	}
	slices.Sort(ks)
	return ks
}

// checkRecord asserts a record's level and exact key set, and the values of
// want (numbers as in JSON: float64).
func checkRecord(t testing.TB, rec map[string]any, level string, wantKeys []string, want map[string]any) {
	t.Helper()
	if rec["level"] != level {
		t.Errorf("record %v: level %v, want %s", rec, rec["level"], level)
	}
	wk := append([]string{"level", "msg"}, wantKeys...)
	slices.Sort(wk)
	got := keys(rec)
	if e, ok := rec["error"]; ok && rec["msg"] == "endpoint evicted" && !slices.Contains(wk, "error") {
		// An eviction for a failed call also says what failed; the
		// reason stays the key tests match on.
		if s, _ := e.(string); s == "" {
			t.Errorf("record %v: empty error", rec)
		}
		got = slices.DeleteFunc(got, func(k string) bool { return k == "error" })
	}
	if !slices.Equal(got, wk) {
		t.Errorf("record %v: keys %v, want %v", rec, got, wk)
	}
	for k, v := range want {
		if fmt.Sprint(rec[k]) != fmt.Sprint(v) {
			t.Errorf("record %v: %s = %v, want %v", rec, k, rec[k], v)
		}
	}
}

// recordChange logs ch as vigil's eviction log records a transition
// (DESIGN.md, "Eviction log"; balancer/pool writes the real records).
func recordChange(logger *slog.Logger, ch Change) {
	attrs := []slog.Attr{slog.String("cluster", ch.Cluster), slog.String("endpoint", ch.Address), slog.String("check", string(ch.Mode))}
	switch ch.Transition {
	case Admitted:
		logger.LogAttrs(context.Background(), slog.LevelInfo, "endpoint admitted", attrs...)
	case Evicted:
		attrs = append(attrs, slog.String("reason", ch.New.Reason), slog.Int("failures", ch.New.Failures),
			slog.Int("healthy", ch.Healthy), slog.Int("total", ch.Total))
		if ch.Hint != "" {
			attrs = append(attrs, slog.String("hint", ch.Hint))
		}
		if ch.Result.Err != nil {
			attrs = append(attrs, slog.String("error", ErrorText(ch.Result.Err)))
		}
		logger.LogAttrs(context.Background(), slog.LevelWarn, "endpoint evicted", attrs...)
	case Readmitted:
		attrs = append(attrs, slog.Int("healthy", ch.Healthy), slog.Int("total", ch.Total))
		logger.LogAttrs(context.Background(), slog.LevelInfo, "endpoint readmitted", attrs...)
	}
}

// changeLog collects OnChange calls.
type changeLog struct {
	mu      sync.Mutex
	changes []Change
}

func (c *changeLog) add(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.changes = append(c.changes, ch)
}

func (c *changeLog) transitions(addr string) []Transition {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Transition
	for _, ch := range c.changes {
		if ch.Address == addr && ch.Transition != NoTransition {
			out = append(out, ch.Transition)
		}
	}
	return out
}

// stallingHealth answers Check only when its context ends, or when release
// is closed (then SERVING); entered receives one value per call.
type stallingHealth struct {
	healthgrpc.UnimplementedHealthServer
	entered chan struct{}
	release chan struct{}
}

func newStallingHealth() *stallingHealth {
	return &stallingHealth{entered: make(chan struct{}, 100), release: make(chan struct{})}
}

func (s *stallingHealth) Check(ctx context.Context, _ *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	s.entered <- struct{}{}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.release:
		return &healthgrpc.HealthCheckResponse{Status: healthgrpc.HealthCheckResponse_SERVING}, nil
	}
}

// fixedHealth answers every Check with the same response or error.
type fixedHealth struct {
	healthgrpc.UnimplementedHealthServer
	status healthgrpc.HealthCheckResponse_ServingStatus
	err    error
}

func (f *fixedHealth) Check(context.Context, *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &healthgrpc.HealthCheckResponse{Status: f.status}, nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
