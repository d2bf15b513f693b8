package integration

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// chaosLoad is the lead's mixed load (unary calls and bidi streams through
// a grpc listener, one call per new connection through a tcp listener)
// with every call tagged with a chaos id, so that each failure can be
// judged: did the call reach the faulty endpoint, or should it have
// succeeded? It can be paused and resumed, to measure vigil at rest.
type chaosLoad struct {
	spec    loadSpec
	timeout time.Duration
	unary   []*grpc.ClientConn
	streams []*grpc.ClientConn
	seq     atomic.Int64

	runMu  sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	ok       map[string]int // successful calls by kind
	servedBy map[string]int // successful unary and tcp calls by server id
	failures []chaosFailure
}

// chaosFailure is one failed call.
type chaosFailure struct {
	Kind  string
	ID    string
	Start time.Time
	Err   error
}

func (f chaosFailure) String() string { return fmt.Sprintf("%s %s: %v", f.Kind, f.ID, f.Err) }

// newChaosLoad opens the load's client connections; start runs it. Each
// call gets timeout (5s if 0).
func newChaosLoad(t testing.TB, spec loadSpec, timeout time.Duration) *chaosLoad {
	t.Helper()
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	l := &chaosLoad{spec: spec, timeout: timeout, ok: map[string]int{}, servedBy: map[string]int{}}
	for range spec.unary {
		l.unary = append(l.unary, newConn(t, spec.grpcAddr))
	}
	for range spec.streams {
		l.streams = append(l.streams, newConn(t, spec.grpcAddr))
	}
	t.Cleanup(l.pause)
	return l
}

// start runs the load until pause.
func (l *chaosLoad) start() {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	if l.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	for _, conn := range l.unary {
		tc := testgrpc.NewTestServiceClient(conn)
		l.loop(ctx, "unary", func(ctx context.Context) (string, error) {
			return (&client{conn: conn, tc: tc}).call(ctx)
		})
	}
	for _, conn := range l.streams {
		tc := testgrpc.NewTestServiceClient(conn)
		l.loop(ctx, "stream", func(ctx context.Context) (string, error) {
			return pingPong(ctx, tc, 10)
		})
	}
	for range l.spec.tcp {
		l.loop(ctx, "tcp", func(ctx context.Context) (string, error) {
			return callOverNewConnection(ctx, l.spec.tcpAddr)
		})
	}
}

// pause stops the load and waits for the calls in flight to end.
func (l *chaosLoad) pause() {
	l.runMu.Lock()
	defer l.runMu.Unlock()
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.wg.Wait()
	l.cancel = nil
}

func (l *chaosLoad) loop(ctx context.Context, kind string, call func(context.Context) (string, error)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for ctx.Err() == nil {
			id := fmt.Sprintf("%s-%d", kind, l.seq.Add(1))
			start := time.Now()
			callCtx, cancel := context.WithTimeout(chaosCtx(context.WithoutCancel(ctx), id), l.timeout)
			server, err := call(callCtx)
			cancel()
			l.record(kind, id, start, server, err)
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

func (l *chaosLoad) record(kind, id string, start time.Time, server string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failures = append(l.failures, chaosFailure{Kind: kind, ID: id, Start: start, Err: err})
		return
	}
	l.ok[kind]++
	if kind != "stream" {
		l.servedBy[server]++
	}
}

// served returns how many calls each backend served so far.
func (l *chaosLoad) served() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.servedBy)
}

// waitServed waits until backend id has served more calls than before.
func (l *chaosLoad) waitServed(t testing.TB, timeout time.Duration, id string, before int) {
	t.Helper()
	eventually(t, timeout, func() bool { return l.served()[id] > before }, "%s serves calls again (served so far: %v)", id, l.served())
}

// failuresIn returns the failed calls that started in [from, to).
func (l *chaosLoad) failuresIn(from, to time.Time) []chaosFailure {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []chaosFailure
	for _, f := range l.failures {
		if !f.Start.Before(from) && f.Start.Before(to) {
			out = append(out, f)
		}
	}
	return out
}

// chaosVerdict is the outcome of a load run under a fault.
type chaosVerdict struct {
	OK          map[string]int
	Reached     []chaosFailure // failed calls that reached the faulty endpoint
	Unexplained []chaosFailure // failed calls that should have succeeded
}

func (v chaosVerdict) String() string {
	kinds := slices.Sorted(maps.Keys(v.OK))
	var parts []string
	total := 0
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, v.OK[k]))
		total += v.OK[k]
	}
	return fmt.Sprintf("%d calls succeeded (%s); %d failed having reached the faulty endpoint, %d failed that should not have",
		total, strings.Join(parts, ", "), len(v.Reached), len(v.Unexplained))
}

// verdict sorts the failures: reached says whether a failed call reached
// the faulty endpoint.
func (l *chaosLoad) verdict(reached func(chaosFailure) bool) chaosVerdict {
	l.mu.Lock()
	defer l.mu.Unlock()
	v := chaosVerdict{OK: maps.Clone(l.ok)}
	for _, f := range l.failures {
		if reached(f) {
			v.Reached = append(v.Reached, f)
		} else {
			v.Unexplained = append(v.Unexplained, f)
		}
	}
	return v
}

// requireNoUnexplained fails the test if a call failed that did not reach
// the faulty endpoint, and logs the figures either way.
func (v chaosVerdict) requireNoUnexplained(t testing.TB, what string) {
	t.Helper()
	if err := v.check(t, what); err != nil {
		t.Error(err)
	}
}

// check logs the figures and returns an error if a call failed that did
// not reach the faulty endpoint, or if no call succeeded.
func (v chaosVerdict) check(t testing.TB, what string) error {
	t.Helper()
	t.Logf("%s: %v", what, v)
	n := 0
	for _, c := range v.OK {
		n += c
	}
	if n == 0 {
		return fmt.Errorf("%s: no call succeeded", what)
	}
	if len(v.Unexplained) == 0 {
		return nil
	}
	var b strings.Builder
	for i, f := range v.Unexplained {
		if i == 20 {
			fmt.Fprintf(&b, "  ... and %d more\n", len(v.Unexplained)-i)
			break
		}
		fmt.Fprintf(&b, "  %v\n", f)
	}
	return fmt.Errorf("%s: %d calls failed that never reached the faulty endpoint:\n%s", what, len(v.Unexplained), b.String())
}
