package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// load keeps a steady mix of traffic on vigil's listeners: unary RPCs and
// bidi streams through a grpc listener, and short TCP connections (one gRPC
// call each) through a tcp listener. It counts every outcome.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ok, failed atomic.Int64
	mu         sync.Mutex
	failures   map[string]int
	servedBy   map[string]int
	// excused tells whether a failure is one the test expects (a TCP
	// connection cut because its backend was removed); nil excuses none.
	excused func(kind string, err error) bool
}

type loadSpec struct {
	grpcAddr string
	tcpAddr  string
	unary    int // goroutines making unary calls, each over its own client connection
	streams  int // goroutines running bidi ping-pong streams
	tcp      int // goroutines making one call per new TCP connection
}

func startLoad(t testing.TB, spec loadSpec) *load {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, failures: map[string]int{}, servedBy: map[string]int{}}
	t.Cleanup(l.stop)
	for range spec.unary {
		conn := newConn(t, spec.grpcAddr)
		l.loop(ctx, "unary", func(ctx context.Context) (string, error) {
			return (&client{conn: conn, tc: testpb.NewTestServiceClient(conn)}).call(ctx)
		})
	}
	for range spec.streams {
		conn := newConn(t, spec.grpcAddr)
		l.loop(ctx, "stream", func(ctx context.Context) (string, error) {
			return pingPong(ctx, testpb.NewTestServiceClient(conn), 10)
		})
	}
	for range spec.tcp {
		l.loop(ctx, "tcp", func(ctx context.Context) (string, error) {
			return callOverNewConnection(ctx, spec.tcpAddr)
		})
	}
	return l
}

func newConn(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// loop runs call until ctx is done. Calls are not cut by the end of the
// load: each gets its own timeout, so stopping counts no false failures.
func (l *load) loop(ctx context.Context, kind string, call func(context.Context) (string, error)) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for ctx.Err() == nil {
			callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			id, err := call(callCtx)
			cancel()
			l.record(kind, id, err)
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

func (l *load) record(kind, id string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		if l.excused != nil && l.excused(kind, err) {
			return
		}
		l.failed.Add(1)
		l.failures[kind+": "+err.Error()]++
		return
	}
	l.ok.Add(1)
	l.servedBy[id]++
}

// served returns how many calls each backend has served so far.
func (l *load) served() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.servedBy))
	for k, v := range l.servedBy {
		out[k] = v
	}
	return out
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// requireClean stops the load and fails the test if any call failed.
func (l *load) requireClean(t testing.TB) {
	t.Helper()
	l.stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ok.Load() == 0 {
		t.Fatal("the load made no successful call")
	}
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d of %d calls failed: %v", n, n+l.ok.Load(), l.failures)
	} else {
		t.Logf("load: %d calls, none failed; served by %v", l.ok.Load(), l.servedBy)
	}
}

// pingPong runs one FullDuplexCall with n request/response rounds and
// returns nothing for an id: streams are counted, not attributed. A Send on
// a stream that ended fails with io.EOF; the status the stream ended with
// (vigil's message naming the endpoint it lost, say) comes from Recv, and
// is what the error reports.
func pingPong(ctx context.Context, tc testpb.TestServiceClient, n int) (string, error) {
	stream, err := tc.FullDuplexCall(ctx)
	if err != nil {
		return "", fmt.Errorf("open stream: %w", err)
	}
	req := &testpb.StreamingOutputCallRequest{
		ResponseParameters: []*testpb.ResponseParameters{{Size: 64}},
		Payload:            &testpb.Payload{Body: make([]byte, 64)},
	}
	for i := range n {
		if err := stream.Send(req); err != nil {
			if errors.Is(err, io.EOF) {
				var rerr error
				for rerr == nil {
					_, rerr = stream.Recv()
				}
				if !errors.Is(rerr, io.EOF) {
					err = rerr
				}
			}
			return "", fmt.Errorf("send %d: %w", i, err)
		}
		if _, err := stream.Recv(); err != nil {
			return "", fmt.Errorf("recv %d: %w", i, err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return "", fmt.Errorf("close send: %w", err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("end of stream: %w", err)
	}
	return "stream", nil
}
