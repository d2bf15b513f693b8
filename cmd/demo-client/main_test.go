package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/internal/ordersvc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLong bounds waits for things that should happen soon, generously.
const waitLong = 20 * time.Second

func TestFormatReport(t *testing.T) {
	unavailable := "UNAVAILABLE: no healthy upstream in cluster demo"
	tests := []struct {
		name    string
		tally   tally
		servers []string
		want    string
	}{
		{
			name:    "spread",
			tally:   tally{ok: 40, byServer: map[string]int{"demo-1": 14, "demo-2": 13, "demo-3": 13}},
			servers: []string{"demo-1", "demo-2", "demo-3"},
			want:    "client: 40 ok, 0 failed | demo-1=14 demo-2=13 demo-3=13",
		},
		{
			name:    "evicted backend shows zero",
			tally:   tally{ok: 30, byServer: map[string]int{"demo-1": 15, "demo-3": 15}},
			servers: []string{"demo-1", "demo-2", "demo-3"},
			want:    "client: 30 ok, 0 failed | demo-1=15 demo-2=0 demo-3=15",
		},
		{
			name:    "failures",
			tally:   tally{ok: 30, failed: 10, byServer: map[string]int{"demo-1": 30}, byError: map[string]int{unavailable: 10}},
			servers: []string{"demo-1"},
			want:    "client: 30 ok, 10 failed | demo-1=30 | 10 " + unavailable,
		},
		{
			name:  "nothing worked yet",
			tally: tally{failed: 4, byError: map[string]int{"UNAVAILABLE: connection refused": 4}},
			want:  "client: 0 ok, 4 failed | 4 UNAVAILABLE: connection refused",
		},
		{
			name: "errors most frequent first, capped",
			tally: tally{failed: 10, byError: map[string]int{
				"A": 1, "B": 4, "C": 2, "D": 3,
			}},
			want: "client: 0 ok, 10 failed | 4 B; 3 D; 2 C; and 1 more kinds",
		},
		{
			name: "idle",
			want: "client: 0 ok, 0 failed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := formatReport("client", tt.tally, tt.servers); got != tt.want {
				t.Errorf("formatReport =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestDescribeError(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{status.Error(codes.Unavailable, "no healthy upstream in cluster demo"), "UNAVAILABLE: no healthy upstream in cluster demo"},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "DEADLINE_EXCEEDED: context deadline exceeded"},
		{status.Error(codes.Canceled, ""), "CANCELLED"},
		{status.Error(codes.Code(42), "odd"), "UNKNOWN: odd"},
		{status.Error(codes.Internal, "two\nlines"), "INTERNAL: two lines"},
		{errors.New("plain"), "UNKNOWN: plain"},
		{status.Error(codes.Unavailable, strings.Repeat("x", 500)), "UNAVAILABLE: " + strings.Repeat("x", maxMessage) + "..."},
	}
	for _, tt := range tests {
		if got := describeError(tt.err); got != tt.want {
			t.Errorf("describeError(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestSortedKeysIsNatural(t *testing.T) {
	got := sortedKeys(map[string]int{"demo-10": 1, "demo-2": 1, "demo-1": 1, "b": 1, "a-3": 1, noServerID: 1})
	want := "[(no server_id) a-3 b demo-1 demo-2 demo-10]"
	if fmt.Sprint(got) != want {
		t.Errorf("sortedKeys = %v, want %s", got, want)
	}
}

func TestRecorder(t *testing.T) {
	rec := newRecorder()
	rec.record("b", nil)
	rec.record("a", nil)
	rec.record("", nil)
	rec.record("", status.Error(codes.Unavailable, "down"))
	period, seen := rec.takePeriod()
	if got := formatReport("c", period, seen); got != "c: 3 ok, 1 failed | (no server_id)=1 a=1 b=1 | 1 UNAVAILABLE: down" {
		t.Errorf("first period: %s", got)
	}
	rec.record("a", nil)
	period, seen = rec.takePeriod()
	if got := formatReport("c", period, seen); got != "c: 1 ok, 0 failed | (no server_id)=0 a=1 b=0" {
		t.Errorf("second period: %s", got)
	}
	if got := formatReport("c total", rec.takeTotal(), seen); got != "c total: 4 ok, 1 failed | (no server_id)=1 a=2 b=1 | 1 UNAVAILABLE: down" {
		t.Errorf("total: %s", got)
	}
}

// idServer is a TestService that answers UnaryCall with its id.
type idServer struct {
	testpb.UnimplementedTestServiceServer
	id    string
	calls atomic.Int64
}

func (s *idServer) UnaryCall(_ context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	s.calls.Add(1)
	resp := &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, req.GetResponseSize())}}
	if req.GetFillServerId() {
		resp.ServerId = s.id
	}
	return resp, nil
}

// startServer serves an idServer on 127.0.0.1:0.
func startServer(t *testing.T, id string) (string, *idServer) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	impl := &idServer{id: id}
	testpb.RegisterTestServiceServer(srv, impl)
	ordersvc.Register(srv, "orders-"+id, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String(), impl
}

// startRoundRobin is a stand-in for vigil's tcp listener: each accepted
// connection is piped to the next backend in turn.
func startRoundRobin(t *testing.T, backends ...string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			down, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", backends[i%len(backends)])
			if err != nil {
				down.Close()
				continue
			}
			if !track(down) || !track(up) {
				down.Close()
				up.Close()
				return
			}
			for _, pipe := range [][2]net.Conn{{up, down}, {down, up}} {
				wg.Go(func() {
					_, _ = io.Copy(pipe[0], pipe[1])
					pipe[0].Close()
					pipe[1].Close()
				})
			}
		}
	})
	t.Cleanup(func() {
		lis.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return lis.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for run and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// runFor runs the client with args until it ends by itself (-duration).
func runFor(t *testing.T, args ...string) []string {
	t.Helper()
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("run(%q): %v\nstderr:\n%s", args, err, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("run(%q) did not stop by itself", args)
	}
	return strings.Split(strings.TrimSpace(stdout.String()), "\n")
}

// totalLine returns the final "total" line, checking the others' shape.
func totalLine(t *testing.T, lines []string) string {
	t.Helper()
	shape := regexp.MustCompile(`^client( total)?: \d+ ok, \d+ failed( \| .*)?$`)
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "client: ") {
		t.Fatalf("want a start line, reports and a total, got:\n%s", strings.Join(lines, "\n"))
	}
	for _, line := range lines[1:] {
		if !shape.MatchString(line) {
			t.Errorf("malformed report line %q", line)
		}
	}
	return lines[len(lines)-1]
}

// okCount extracts N from "... N ok, ...".
func okCount(t *testing.T, line string) (ok, failed int) {
	t.Helper()
	if _, err := fmt.Sscanf(line[strings.Index(line, ": ")+2:], "%d ok, %d failed", &ok, &failed); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	return ok, failed
}

func TestGRPCModeUsesOneConnection(t *testing.T) {
	a, _ := startServer(t, "a")
	b, _ := startServer(t, "b")
	target := startRoundRobin(t, a, b)

	lines := runFor(t, "-target", target, "-mode", "grpc", "-rate", "200", "-report", "100ms", "-duration", "500ms")
	total := totalLine(t, lines)
	ok, failed := okCount(t, total)
	if ok == 0 || failed != 0 {
		t.Fatalf("total %q: want calls and no failures", total)
	}
	// One connection: every call lands on the backend that connection got.
	if !strings.HasSuffix(total, fmt.Sprintf("| a=%d", ok)) && !strings.HasSuffix(total, fmt.Sprintf("| b=%d", ok)) {
		t.Errorf("total %q: want every call on one backend", total)
	}
}

// TestCallBoth: -call both alternates the two services, tallied apart.
func TestCallBoth(t *testing.T) {
	a, _ := startServer(t, "a")
	lines := runFor(t, "-target", a, "-mode", "grpc", "-call", "both", "-rate", "200", "-report", "100ms", "-duration", "500ms")
	total := totalLine(t, lines)
	ok, failed := okCount(t, total)
	if ok < 2 || failed != 0 || !strings.Contains(total, "orders/orders-a=") || !strings.Contains(total, "test/a=") {
		t.Fatalf("total %q: want calls to both services and no failures", total)
	}
}

func TestTCPModeSpreadsConnections(t *testing.T) {
	a, serverA := startServer(t, "a")
	b, serverB := startServer(t, "b")
	target := startRoundRobin(t, a, b)

	lines := runFor(t, "-target", target, "-mode", "tcp", "-rate", "100", "-report", "100ms", "-duration", "500ms", "-size", "10")
	total := totalLine(t, lines)
	ok, failed := okCount(t, total)
	if ok < 2 || failed != 0 {
		t.Fatalf("total %q: want calls and no failures", total)
	}
	// A new connection per call alternates over the two backends.
	if !strings.Contains(total, "| a=") || !strings.Contains(total, " b=") {
		t.Errorf("total %q: want calls on both backends", total)
	}
	if got := serverA.calls.Load() + serverB.calls.Load(); got != int64(ok) {
		t.Errorf("backends served %d calls, client counted %d ok", got, ok)
	}
}

func TestFailuresAreReportedWithCodeAndMessage(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()

	for _, mode := range []string{"grpc", "tcp"} {
		t.Run(mode, func(t *testing.T) {
			lines := runFor(t, "-target", closed, "-mode", mode, "-rate", "50", "-report", "100ms", "-duration", "300ms")
			total := totalLine(t, lines)
			if ok, failed := okCount(t, total); ok != 0 || failed == 0 {
				t.Fatalf("total %q: want only failures", total)
			}
			if !strings.Contains(total, " UNAVAILABLE: ") {
				t.Errorf("total %q: want the UNAVAILABLE code and its message", total)
			}
		})
	}
}

func TestStopsOnCancelWithFinalReport(t *testing.T) {
	addr, server := startServer(t, "solo")
	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-target", addr, "-rate", "100", "-report", "1h"}, &stdout, &stderr)
	}()
	// Wait for some calls; the report period is too long to see one.
	deadline := time.Now().Add(waitLong)
	for server.calls.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("run did not return after cancel")
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	total := totalLine(t, lines)
	if _, failed := okCount(t, total); failed != 0 {
		t.Errorf("stopping made calls fail: %q", total)
	}
	if !strings.HasPrefix(total, "client total: ") {
		t.Errorf("last line %q, want the total", total)
	}
}

func TestBadFlags(t *testing.T) {
	tests := []struct {
		args     []string
		wantErr  string
		wantCode int
	}{
		{[]string{"-h"}, "help requested", 0},
		{[]string{"-bogus"}, "flag provided but not defined", 2},
		{[]string{"-mode", "udp"}, `-mode "udp"`, 2},
		{[]string{"-rate", "0"}, "-rate 0", 2},
		{[]string{"-rate", "NaN"}, "-rate NaN", 2},
		{[]string{"-report", "0s"}, "-report 0s", 2},
		{[]string{"-size", "-1"}, "-size -1", 2},
		{[]string{"-timeout", "0s"}, "-timeout 0s", 2},
		{[]string{"-concurrency", "0"}, "-concurrency 0", 2},
		{[]string{"-target", ""}, "-target is empty", 2},
		{[]string{"stray"}, "unexpected arguments", 2},
		{[]string{"-target", "%zz"}, "gRPC client for %zz", 1},
		{[]string{"-call", "billing"}, `-call "billing"`, 2},
		{[]string{"-call", "orders", "-mode", "tcp"}, "are for -mode grpc", 2},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), waitLong) // should fail at once
		err := run(ctx, tt.args, &stdout, &stderr)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.wantErr)
			continue
		}
		if code := exitCode(err, io.Discard); code != tt.wantCode {
			t.Errorf("run(%q): exit code %d, want %d", tt.args, code, tt.wantCode)
		}
	}
}
