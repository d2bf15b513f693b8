package grpcproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/internal/interoptest"
)

// scripted is a TestService whose UnaryCall and FullDuplexCall run test
// code.
type scripted struct {
	testgrpc.UnimplementedTestServiceServer
	unary  func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	duplex func(testgrpc.TestService_FullDuplexCallServer) error
}

func (s *scripted) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return s.unary(ctx, req)
}

func (s *scripted) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	return s.duplex(stream)
}

func TestInterop(t *testing.T) {
	a, b := startBackend(t, nil), startBackend(t, nil)
	cl := clusterOf(t, nil, endpointFor(t, a.addr), endpointFor(t, b.addr))
	_, addr := startProxy(t, cl, Options{})
	interoptest.Run(t, addr)
	if a.calls.Load() == 0 || b.calls.Load() == 0 {
		t.Errorf("RPCs per backend = %d, %d; want both > 0 (per-RPC balancing)", a.calls.Load(), b.calls.Load())
	}
}

func TestNoHealthyUpstream(t *testing.T) {
	_, addr := startProxy(t, balancer.NewCluster("orders"), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	_, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "no healthy upstream in cluster orders" {
		t.Fatalf("EmptyCall = %v, want UNAVAILABLE: no healthy upstream in cluster orders", err)
	}
}

func TestSpreadsRPCsOfOneConnection(t *testing.T) {
	backends := []*backend{startBackend(t, nil), startBackend(t, nil), startBackend(t, nil)}
	var eps []*balancer.Endpoint
	for _, b := range backends {
		eps = append(eps, endpointFor(t, b.addr))
	}
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, eps...), Options{Metrics: m})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	const n = 30
	for range n {
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			t.Fatalf("EmptyCall: %v", err)
		}
	}
	for i, b := range backends {
		// round_robin over 3 equal endpoints: exactly n/3 each.
		if got := b.calls.Load(); got != n/3 {
			t.Errorf("backend %d got %d RPCs, want %d", i, got, n/3)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.finished["OK"] != n || len(m.started) != 3 {
		t.Errorf("metrics: finished=%v started=%v, want %d OK over 3 endpoints", m.finished, m.started, n)
	}
}

func TestLeastRequestCountsInflightRPCs(t *testing.T) {
	release := make(chan struct{})
	holding := &scripted{
		unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return &testgrpc.SimpleResponse{}, nil
		},
		duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
			<-release
			return nil
		},
	}
	a, b := startBackend(t, holding), startBackend(t, holding)
	epA, epB := endpointFor(t, a.addr), endpointFor(t, b.addr)
	_, addr := startProxy(t, clusterOf(t, leastRequest, epA, epB), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	ctx := ctxFor(t)

	// Three streams held open: least_request puts them 2+1 or so; what
	// matters is that the in-flight counts match and that unary RPCs then
	// go to the least loaded endpoint.
	var streams []testgrpc.TestService_FullDuplexCallClient
	for range 3 {
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatalf("FullDuplexCall: %v", err)
		}
		streams = append(streams, s)
	}
	waitFor(t, "3 streams in flight", func() bool {
		return epA.Inflight()+epB.Inflight() == 3 && a.calls.Load()+b.calls.Load() == 3
	})
	if a.calls.Load() != epA.Inflight() || b.calls.Load() != epB.Inflight() {
		t.Fatalf("inflight A=%d B=%d, backend streams A=%d B=%d", epA.Inflight(), epB.Inflight(), a.calls.Load(), b.calls.Load())
	}
	less, lessBackend := epA, a
	if epB.Inflight() < epA.Inflight() {
		less, lessBackend = epB, b
	}
	before := lessBackend.calls.Load()
	for range 10 {
		if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
	}
	if got := lessBackend.calls.Load() - before; got != 10 {
		t.Errorf("least loaded endpoint %s got %d of 10 unary RPCs", less.Address(), got)
	}
	close(release)
	for _, s := range streams {
		if _, err := s.Recv(); err != io.EOF {
			t.Errorf("stream Recv = %v, want EOF", err)
		}
	}
	waitFor(t, "in-flight counts back to 0", func() bool { return epA.Inflight() == 0 && epB.Inflight() == 0 })
}

func TestCompression(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	seen := &compressionSeen{}
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr, grpc.WithStatsHandler(seen)))
	ctx := ctxFor(t)
	body := bytes.Repeat([]byte("vigil "), 20000)
	// A mix of compressed and plain RPCs on one connection.
	for i, gz := range []bool{true, false, true, true, false} {
		var opts []grpc.CallOption
		want := ""
		if gz {
			opts = append(opts, grpc.UseCompressor(gzip.Name))
			want = gzip.Name
		}
		resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{
			ResponseType: testgrpc.PayloadType_COMPRESSABLE,
			ResponseSize: 100000,
			Payload:      &testgrpc.Payload{Body: body},
		}, opts...)
		if err != nil {
			t.Fatalf("call %d (gzip %v): %v", i, gz, err)
		}
		if len(resp.GetPayload().GetBody()) != 100000 {
			t.Fatalf("call %d: response body %d bytes, want 100000", i, len(resp.GetPayload().GetBody()))
		}
		if _, comp := be.last(); comp != want {
			t.Errorf("call %d: backend saw request encoding %q, want %q", i, comp, want)
		}
		if got := seen.get(); got != want {
			t.Errorf("call %d: client saw response encoding %q, want %q", i, got, want)
		}
	}
	// Streaming, compressed both ways.
	s, err := tc.FullDuplexCall(ctx, grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{
			ResponseParameters: []*testgrpc.ResponseParameters{{Size: 50000}},
			Payload:            &testgrpc.Payload{Body: body},
		}); err != nil {
			t.Fatal(err)
		}
		if r, err := s.Recv(); err != nil || len(r.GetPayload().GetBody()) != 50000 {
			t.Fatalf("Recv = %d bytes, %v", len(r.GetPayload().GetBody()), err)
		}
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("final Recv = %v, want EOF", err)
	}
	if _, comp := be.last(); comp != gzip.Name {
		t.Errorf("backend saw stream encoding %q, want gzip", comp)
	}
}

func TestLargeMessages(t *testing.T) {
	const big = 16<<20 + 1024 // over 16 MiB of payload
	be := startBackend(t, nil, grpc.MaxRecvMsgSize(64<<20), grpc.MaxSendMsgSize(64<<20))
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{MaxMessageSize: 24 << 20})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20))))
	// 16 MiB messages, gzip-compressed and decompressed by the client and
	// the backend in this process under the race detector: tens of
	// seconds of CPU on a loaded 2-core machine, not a sign of a stall.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	payload := bytes.Repeat([]byte{0xab}, big)
	resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{
		ResponseType: testgrpc.PayloadType_COMPRESSABLE,
		ResponseSize: big,
		Payload:      &testgrpc.Payload{Body: payload},
	})
	if err != nil {
		t.Fatalf("16 MiB both ways: %v", err)
	}
	if len(resp.GetPayload().GetBody()) != big {
		t.Fatalf("response body %d bytes, want %d", len(resp.GetPayload().GetBody()), big)
	}

	// Streaming, both ways, with gzip for good measure.
	s, err := tc.FullDuplexCall(ctx, grpc.UseCompressor(gzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testgrpc.StreamingOutputCallRequest{
		ResponseParameters: []*testgrpc.ResponseParameters{{Size: big}},
		Payload:            &testgrpc.Payload{Body: payload},
	}); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Recv(); err != nil || len(r.GetPayload().GetBody()) != big {
		t.Fatalf("stream Recv = %d bytes, %v", len(r.GetPayload().GetBody()), err)
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream end = %v", err)
	}

	// Over the listener's limit, either way: RESOURCE_EXHAUSTED, and the
	// proxy keeps serving.
	tooBig := bytes.Repeat([]byte{1}, 25<<20)
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: tooBig}}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("request over MaxMessageSize: %v, want RESOURCE_EXHAUSTED", err)
	}
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 25 << 20}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("response over MaxMessageSize: %v, want RESOURCE_EXHAUSTED", err)
	}
	if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Errorf("EmptyCall after refusals: %v", err)
	}
}

func TestDeadlineAndCancellationReachBackend(t *testing.T) {
	type seen struct {
		deadline time.Duration
		hasDL    bool
		err      error
	}
	results := make(chan seen, 4)
	svc := &scripted{
		unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			dl, ok := ctx.Deadline()
			left := time.Until(dl)
			<-ctx.Done()
			results <- seen{deadline: left, hasDL: ok, err: ctx.Err()}
			return nil, ctx.Err()
		},
		duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
			if _, err := stream.Recv(); err != nil {
				return err
			}
			if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
				return err
			}
			<-stream.Context().Done()
			_, hasDL := stream.Context().Deadline()
			results <- seen{hasDL: hasDL, err: stream.Context().Err()}
			return nil
		},
	}
	be := startBackend(t, svc)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))

	// Deadline: the backend sees it (the time left, re-encoded) and its
	// context expires.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("UnaryCall with deadline: %v, want DEADLINE_EXCEEDED", err)
	}
	r := <-results
	// The backend's context ends at the deadline: by its own timer or by
	// the proxy's RST_STREAM when the proxy's copy of the deadline fires a
	// moment earlier; either way it ends, and it had the deadline.
	if !r.hasDL || r.deadline <= 0 || r.deadline > 2*time.Second || r.err == nil {
		t.Errorf("backend saw deadline=%v (time left %v) err=%v, want a deadline of at most 2s that ended its call", r.hasDL, r.deadline, r.err)
	}
	if time.Since(start) > 20*time.Second {
		t.Errorf("deadline took %v to propagate", time.Since(start))
	}

	// Cancellation of a unary call.
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		errc <- err
	}()
	waitFor(t, "the unary call to reach the backend", func() bool { return be.calls.Load() == 2 })
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Errorf("cancelled UnaryCall: %v, want CANCELLED", err)
	}
	if r := <-results; !errors.Is(r.err, context.Canceled) || r.hasDL {
		t.Errorf("backend saw %+v, want cancellation and no deadline", r)
	}

	// Cancellation of a stream after its first response.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if r := <-results; !errors.Is(r.err, context.Canceled) {
		t.Errorf("backend stream saw %v, want cancellation", r.err)
	}
}

func TestHeadersTrailersAndStatus(t *testing.T) {
	detail := durationpb.New(42 * time.Second)
	svc := &scripted{
		unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			switch req.GetFillUsername() {
			case false: // trailers-only error, with trailer metadata and details
				_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t1", "x-trailer-bin", "\x00\x01\xff"))
				st, _ := status.New(codes.FailedPrecondition, "trailers only ☺").WithDetails(detail)
				return nil, st.Err()
			default: // headers sent, then failure before any message
				_ = grpc.SendHeader(ctx, metadata.Pairs("x-early", "e1", "x-early-bin", "\xff\xfe"))
				_ = grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t2"))
				return nil, status.Error(codes.Aborted, "failed after headers")
			}
		},
	}
	be := startBackend(t, svc)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	ctx := ctxFor(t)

	var hdr, trl metadata.MD
	_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr), grpc.Trailer(&trl))
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "trailers only ☺" {
		t.Errorf("trailers-only: %v", err)
	}
	if d := st.Details(); len(d) != 1 || !proto.Equal(d[0].(proto.Message), detail) {
		t.Errorf("trailers-only details = %v, want [%v]", d, detail)
	}
	if got := trl["x-trailer"]; len(got) != 1 || got[0] != "t1" {
		t.Errorf("trailer x-trailer = %q", got)
	}
	if got := trl["x-trailer-bin"]; len(got) != 1 || got[0] != "\x00\x01\xff" {
		t.Errorf("trailer x-trailer-bin = %q", got)
	}
	if len(hdr) != 0 {
		t.Errorf("trailers-only answer got headers %v", hdr)
	}

	hdr, trl = nil, nil
	_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{FillUsername: true}, grpc.Header(&hdr), grpc.Trailer(&trl))
	if st := status.Convert(err); st.Code() != codes.Aborted || st.Message() != "failed after headers" {
		t.Errorf("failure after headers: %v", err)
	}
	if got := hdr["x-early"]; len(got) != 1 || got[0] != "e1" {
		t.Errorf("header x-early = %q (headers %v)", got, hdr)
	}
	if got := hdr["x-early-bin"]; len(got) != 1 || got[0] != "\xff\xfe" {
		t.Errorf("header x-early-bin = %q", got)
	}
	if got := trl["x-trailer"]; len(got) != 1 || got[0] != "t2" {
		t.Errorf("trailer x-trailer = %q", got)
	}
}

func TestMetadataForwardedExactlyOnce(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	md := metadata.Pairs(
		"x-one", "a",
		"x-multi", "1", "x-multi", "2",
		"x-blob-bin", "\x00\xff\x10binary",
		"x-grpc-test-echo-initial", "echo-me",
	)
	ctx := metadata.NewOutgoingContext(ctxFor(t), md)
	var hdr metadata.MD
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr), grpc.UseCompressor(gzip.Name)); err != nil {
		t.Fatal(err)
	}
	got, _ := be.last()
	for k, want := range map[string][]string{
		"x-one":      {"a"},
		"x-multi":    {"1", "2"},
		"x-blob-bin": {"\x00\xff\x10binary"},
	} {
		if g := got[k]; strings.Join(g, "|") != strings.Join(want, "|") {
			t.Errorf("backend metadata %s = %q, want %q", k, g, want)
		}
	}
	for _, k := range []string{"grpc-accept-encoding", "user-agent", ":authority", "content-type"} {
		if len(got[k]) > 1 {
			t.Errorf("backend metadata %s sent %d times: %q", k, len(got[k]), got[k])
		}
	}
	if g := hdr["x-grpc-test-echo-initial"]; len(g) != 1 || g[0] != "echo-me" {
		t.Errorf("echoed header = %q, want exactly [echo-me]", g)
	}
}

func TestRetriesUnreachableEndpointBeforeSending(t *testing.T) {
	a, b := startBackend(t, nil), startBackend(t, nil)
	eps := []*balancer.Endpoint{
		endpointFor(t, refusedAddr(t)),  // connection refused
		endpointFor(t, deadListener(t)), // reset on connect
		endpointFor(t, a.addr),
		endpointFor(t, b.addr),
	}
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, eps...), Options{Metrics: m})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	const n = 40
	for i := range n {
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			t.Fatalf("RPC %d failed: %v (want every RPC retried onto a live endpoint)", i, err)
		}
	}
	if a.calls.Load()+b.calls.Load() != n {
		t.Errorf("backends served %d RPCs, want %d", a.calls.Load()+b.calls.Load(), n)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.retried == 0 {
		t.Errorf("no retry recorded")
	}
}

func TestNoReplayOnceSent(t *testing.T) {
	var mu sync.Mutex
	received := 0
	failing := &scripted{
		unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			mu.Lock()
			received++
			mu.Unlock()
			return nil, status.Error(codes.Unavailable, "backend overloaded")
		},
	}
	a, b := startBackend(t, failing), startBackend(t, failing)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, a.addr), endpointFor(t, b.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	for range 6 {
		_, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{})
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != "backend overloaded" {
			t.Fatalf("UnaryCall = %v, want the backend's UNAVAILABLE", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if received != 6 {
		t.Errorf("backends received %d requests for 6 RPCs: replayed", received)
	}

	// A backend that dies while it holds the request: the RPC fails, it
	// is not sent again elsewhere.
	dying := make(chan struct{})
	var hits sync.WaitGroup
	hits.Add(1)
	var once sync.Once
	holder := &scripted{
		unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			once.Do(hits.Done)
			<-dying
			return nil, ctx.Err()
		},
	}
	c := startBackend(t, holder)
	other := startBackend(t, nil)
	_, addr2 := startProxy(t, clusterOf(t, nil, endpointFor(t, c.addr)), Options{})
	// The second endpoint joins after the RPC is in flight on c.
	tc2 := testgrpc.NewTestServiceClient(dialClient(t, addr2))
	errc := make(chan error, 1)
	go func() {
		_, err := tc2.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{})
		errc <- err
	}()
	hits.Wait()
	go func() {
		c.srv.Stop()
		close(dying)
	}()
	if err := <-errc; status.Code(err) != codes.Unavailable {
		t.Errorf("RPC on a dying backend = %v, want UNAVAILABLE", err)
	}
	if other.calls.Load() != 0 {
		t.Errorf("RPC was replayed on another backend")
	}
}

func TestEvictionMidStream(t *testing.T) {
	a, b := startBackend(t, nil), startBackend(t, nil)
	epA, epB := endpointFor(t, a.addr), endpointFor(t, b.addr)
	cl := clusterOf(t, nil, epA, epB)
	_, addr := startProxy(t, cl, Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	ctx := ctxFor(t)

	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pingPong := func() error {
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 10}}}); err != nil {
			return err
		}
		_, err := s.Recv()
		return err
	}
	if err := pingPong(); err != nil {
		t.Fatal(err)
	}
	on, onBackend, other, otherBackend := epA, a, epB, b
	if b.calls.Load() == 1 {
		on, onBackend, other, otherBackend = epB, b, epA, a
	}
	// Evict the stream's endpoint.
	setHealthy(cl, nil, other)
	before := otherBackend.calls.Load()
	for range 5 {
		if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := otherBackend.calls.Load() - before; got != 5 {
		t.Errorf("after eviction %d of 5 new RPCs went to the remaining endpoint", got)
	}
	if onBackend.calls.Load() != 1 {
		t.Errorf("evicted endpoint got new RPCs")
	}
	// The in-flight stream goes on and finishes normally.
	for range 3 {
		if err := pingPong(); err != nil {
			t.Fatalf("in-flight stream after eviction: %v", err)
		}
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("in-flight stream end: %v", err)
	}
	waitFor(t, "evicted endpoint drained", func() bool { return on.Inflight() == 0 })
}

func TestClosedEndpointCutsStreams(t *testing.T) {
	a := startBackend(t, nil)
	epA := endpointFor(t, a.addr)
	cl := clusterOf(t, nil, epA)
	_, addr := startProxy(t, cl, Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	s, err := tc.FullDuplexCall(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	setHealthy(cl, nil) // removed from the cluster...
	epA.Close()         // ...and its drain deadline passed
	_, err = s.Recv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "removed") {
		t.Fatalf("stream on a closed endpoint: %v, want UNAVAILABLE ... removed", err)
	}
}

func TestSetCluster(t *testing.T) {
	a, b := startBackend(t, nil), startBackend(t, nil)
	p, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, a.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	p.SetCluster(clusterOf(t, nil, endpointFor(t, b.addr)))
	if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	if a.calls.Load() != 1 || b.calls.Load() != 1 {
		t.Errorf("calls a=%d b=%d, want 1 and 1", a.calls.Load(), b.calls.Load())
	}
}

func TestOwnHealthService(t *testing.T) {
	be := startBackend(t, nil)
	hs := health.NewServer()
	hs.SetServingStatus("", healthgrpc.HealthCheckResponse_SERVING)
	hs.SetServingStatus("orders", healthgrpc.HealthCheckResponse_SERVING)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{Health: hs})
	hc := healthgrpc.NewHealthClient(dialClient(t, addr))
	ctx := ctxFor(t)

	for _, svc := range []string{"", "orders"} {
		resp, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, %v; want SERVING", svc, resp.GetStatus(), err)
		}
	}
	if _, err := hc.Check(ctx, &healthgrpc.HealthCheckRequest{Service: "payments"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check(unknown) = %v, want NOT_FOUND", err)
	}
	w, err := hc.Watch(ctx, &healthgrpc.HealthCheckRequest{Service: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v, %v", r.GetStatus(), err)
	}
	hs.SetServingStatus("orders", healthgrpc.HealthCheckResponse_NOT_SERVING)
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after change = %v, %v", r.GetStatus(), err)
	}
	if be.calls.Load() != 0 {
		t.Errorf("health RPCs were forwarded to the backend (%d)", be.calls.Load())
	}
}

func TestShutdownLetsInflightRPCsFinish(t *testing.T) {
	be := startBackend(t, nil)
	hs := health.NewServer()
	p, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{Health: hs})
	cc := dialClient(t, addr)
	tc := testgrpc.NewTestServiceClient(cc)
	ctx := ctxFor(t)

	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ping := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 8}}}
	if err := s.Send(ping); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	w, err := healthgrpc.NewHealthClient(cc).Watch(ctx, &healthgrpc.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}

	hs.Shutdown() // the caller's part: NOT_SERVING first
	if r, err := w.Recv(); err != nil || r.GetStatus() != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after health shutdown = %v, %v", r.GetStatus(), err)
	}
	shut := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- p.Shutdown(sctx)
	}()
	// The Watch ends so it does not hold the shutdown.
	if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch during shutdown = %v, want UNAVAILABLE", err)
	}
	// New connections are refused.
	waitFor(t, "listener closed", func() bool {
		fresh := testgrpc.NewTestServiceClient(dialClient(t, addr))
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := fresh.EmptyCall(c, &testgrpc.Empty{})
		return status.Code(err) == codes.Unavailable
	})
	// The in-flight stream still works and finishes.
	for range 3 {
		if err := s.Send(ping); err != nil {
			t.Fatalf("Send during shutdown: %v", err)
		}
		if _, err := s.Recv(); err != nil {
			t.Fatalf("Recv during shutdown: %v", err)
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with a stream in flight", err)
	default:
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}

func TestShutdownCutsRPCsAtDeadline(t *testing.T) {
	hang := &scripted{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
		<-stream.Context().Done()
		return stream.Context().Err()
	}}
	be := startBackend(t, hang)
	p, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	s, err := tc.FullDuplexCall(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stream at the backend", func() bool { return be.calls.Load() == 1 })
	sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream cut by shutdown: %v, want UNAVAILABLE", err)
	}
}

func TestMaxConcurrentStreams(t *testing.T) {
	release := make(chan struct{})
	svc := &scripted{
		unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return &testgrpc.SimpleResponse{}, nil
		},
		duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
			<-release
			return nil
		},
	}
	be := startBackend(t, svc)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{MaxConcurrentStreams: 2})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	ctx := ctxFor(t)
	var streams []testgrpc.TestService_FullDuplexCallClient
	for range 2 {
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	waitFor(t, "2 streams at the backend", func() bool { return be.calls.Load() == 2 })
	// A third RPC waits for a free stream slot on the client connection.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := tc.UnaryCall(short, &testgrpc.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("third concurrent RPC = %v, want DEADLINE_EXCEEDED (blocked by the limit)", err)
	}
	if be.calls.Load() != 2 {
		t.Errorf("backend saw %d RPCs, want 2", be.calls.Load())
	}
	close(release)
	for _, s := range streams {
		if _, err := s.Recv(); err != io.EOF {
			t.Errorf("stream end = %v", err)
		}
	}
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Errorf("RPC after streams ended: %v", err)
	}
}

func TestIdleTimeoutClosesClientConnection(t *testing.T) {
	be := startBackend(t, nil)
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{IdleTimeout: 300 * time.Millisecond, Metrics: m})
	cc := dialClient(t, addr)
	if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	// The proxy sends GOAWAY; grpc-go's client goes IDLE.
	waitFor(t, "client connection idle", func() bool { return cc.GetState() == connectivity.Idle })
	waitFor(t, "proxy closed the connection", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.conns == 0
	})
}

func TestMaxConnections(t *testing.T) {
	be := startBackend(t, nil)
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{MaxConnections: 1, Metrics: m})
	first := dialClient(t, addr)
	if _, err := testgrpc.NewTestServiceClient(first).EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	second := dialClient(t, addr)
	c, cancel := context.WithTimeout(ctxFor(t), 2*time.Second)
	defer cancel()
	if _, err := testgrpc.NewTestServiceClient(second).EmptyCall(c, &testgrpc.Empty{}); status.Code(err) != codes.Unavailable {
		t.Errorf("RPC on a connection over the cap = %v, want UNAVAILABLE", err)
	}
	m.mu.Lock()
	rejected := m.rejected
	m.mu.Unlock()
	if rejected == 0 {
		t.Errorf("no rejected connection recorded")
	}
	// Once the first client leaves, the second gets in.
	_ = first.Close()
	waitFor(t, "the second client to connect", func() bool {
		second.Connect()
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := testgrpc.NewTestServiceClient(second).EmptyCall(c, &testgrpc.Empty{})
		return err == nil
	})
}

func TestBackendDyingBetweenProbesCostsNoRPC(t *testing.T) {
	backends := []*backend{startBackend(t, nil), startBackend(t, nil), startBackend(t, nil)}
	var eps []*balancer.Endpoint
	for _, b := range backends {
		eps = append(eps, endpointFor(t, b.addr))
	}
	_, addr := startProxy(t, clusterOf(t, nil, eps...), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	for range 6 { // every endpoint connected and used
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			t.Fatal(err)
		}
	}
	// The backend dies; the cluster still lists it as healthy (no probe
	// has noticed yet). An RPC written to its connection in the instant
	// before the proxy read the connection's end may fail (it was sent:
	// it is never replayed); every RPC after that is retried elsewhere
	// before anything is sent.
	backends[0].stop()
	failed := 0
	for i := range 30 {
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			failed++
			if failed > 1 || i > 3 {
				t.Fatalf("RPC %d after a backend died: %v (%d failed)", i, err, failed)
			}
		}
	}
}

func TestSkipsClosedEndpointStillInSnapshot(t *testing.T) {
	a, b := startBackend(t, nil), startBackend(t, nil)
	gone := endpointFor(t, a.addr)
	gone.Close() // removed and closed between the snapshot and the pick
	_, addr := startProxy(t, clusterOf(t, nil, gone, endpointFor(t, b.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	for i := range 10 {
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if b.calls.Load() != 10 || a.calls.Load() != 0 {
		t.Errorf("closed endpoint served %d, live one %d of 10", a.calls.Load(), b.calls.Load())
	}
}

func TestAllEndpointsUnreachable(t *testing.T) {
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, refusedAddr(t)), endpointFor(t, deadListener(t))), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	_, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "no reachable endpoint in cluster orders (tried 2)") {
		t.Fatalf("EmptyCall = %v, want UNAVAILABLE naming the cluster and the 2 endpoints tried", err)
	}
}

func TestIdleBackendConnectionsClose(t *testing.T) {
	old := upstreamIdle
	upstreamIdle = 100 * time.Millisecond
	t.Cleanup(func() { upstreamIdle = old })
	be := startBackend(t, nil)
	ep := endpointFor(t, be.addr)
	p, addr := startProxy(t, clusterOf(t, nil, ep), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	conns := func() int {
		v, ok := p.pools.Load(ep)
		if !ok {
			return -1
		}
		pl := v.(*upPool)
		pl.mu.Lock()
		defer pl.mu.Unlock()
		return len(pl.conns)
	}
	if conns() != 1 {
		t.Fatalf("backend connections = %d, want 1", conns())
	}
	waitFor(t, "the idle backend connection to close", func() bool { return conns() == 0 })
	// The next RPC dials again.
	if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatalf("RPC after the idle close: %v", err)
	}
}

// A backend restarting gracefully (GOAWAY, in-flight RPCs finish, listener
// closed) under continuous traffic costs no RPC: streams it did not
// process are refused to the client (which retries them), new ones go to
// the other endpoint.
func TestBackendGracefulStopUnderLoad(t *testing.T) {
	a, b := startBackend(t, nil), startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, a.addr), endpointFor(t, b.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	var wg sync.WaitGroup
	errs := make(chan error, 8*100)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{ResponseSize: 100}); err != nil {
					errs <- err
				}
			}
		})
	}
	waitFor(t, "traffic on the first backend", func() bool { return a.calls.Load() > 50 })
	a.srv.GracefulStop()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("RPC failed during the graceful stop: %v", err)
	}
}

// TestOutcomesReportedWithoutMetrics: a proxy without Metrics still
// reports each RPC's outcome to its endpoint, for outlier detection.
func TestOutcomesReportedWithoutMetrics(t *testing.T) {
	be := startBackend(t, nil)
	ep := endpointFor(t, be.addr)
	ep.SetOutcomeWatch(&balancer.OutcomeWatch{Threshold: 5, Rates: true, Tripped: make(chan struct{}, 1)})
	_, addr := startProxy(t, clusterOf(t, nil, ep), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	if _, err := tc.UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	_, err := tc.UnaryCall(context.Background(), &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Unavailable)}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("err = %v; want UNAVAILABLE", err)
	}
	var s, f uint64
	deadline := time.Now().Add(5 * time.Second)
	for s < 1 || f < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("outcomes reported: %d successes, %d failures; want 1 and 1", s, f)
		}
		time.Sleep(time.Millisecond)
		ds, df := ep.TakeOutcomes()
		s, f = s+ds, f+df
	}
	if s != 1 || f != 1 {
		t.Errorf("outcomes reported: %d successes, %d failures; want 1 and 1", s, f)
	}
}
