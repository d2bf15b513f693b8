package probeconn

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// serve starts a real grpc-go server on loopback with opts, registering
// what register does, and returns its address.
func serve(t *testing.T, register func(*grpc.Server), opts ...grpc.ServerOption) (string, *grpc.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	if register != nil {
		register(srv)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String(), srv
}

func dial(ctx context.Context, address string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", address)
}

func newConn(t *testing.T, address string, opts Options) *Conn {
	t.Helper()
	if opts.Dial == nil {
		opts.Dial = dial
	}
	c := New(address, opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func check(ctx context.Context, c *Conn, service string, timeout time.Duration) (healthpb.HealthCheckResponse_ServingStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	return resp.GetStatus(), err
}

func TestCheckAnswers(t *testing.T) {
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	withHealth, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	without, _ := serve(t, nil)

	tests := []struct {
		name, address, service string
		want                   healthpb.HealthCheckResponse_ServingStatus
		wantCode               codes.Code
	}{
		{"serving", withHealth, "up", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"not serving", withHealth, "down", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"overall", withHealth, "", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"unknown service", withHealth, "nope", 0, codes.NotFound},
		{"no health service", without, "", 0, codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConn(t, tt.address, Options{UserAgent: "probeconn-test"})
			got, err := check(t.Context(), c, tt.service, 5*time.Second)
			if status.Code(err) != tt.wantCode || got != tt.want {
				t.Fatalf("Check = %v, %v; want %v, code %v", got, err, tt.want, tt.wantCode)
			}
			if c.GetState() != connectivity.Ready {
				t.Errorf("state after an answer = %v, want READY", c.GetState())
			}
		})
	}
}

// recordingHealth answers Check with SERVING and records what it saw.
type recordingHealth struct {
	healthpb.UnimplementedHealthServer
	mu       sync.Mutex
	deadline time.Duration
	agent    []string
}

func (h *recordingHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d, ok := ctx.Deadline(); ok {
		h.deadline = time.Until(d)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	h.agent = md.Get("user-agent")
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func TestCheckSendsDeadlineAndUserAgent(t *testing.T) {
	h := &recordingHealth{}
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, h) })
	c := newConn(t, addr, Options{UserAgent: "vigil-checker"})
	if _, err := check(t.Context(), c, "", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.deadline <= 2*time.Second || h.deadline > 3*time.Second {
		t.Errorf("server saw a deadline %v away, want about 3s", h.deadline)
	}
	if len(h.agent) != 1 || h.agent[0] == "" || h.agent[0][:13] != "vigil-checker" {
		t.Errorf("server saw user-agent %q", h.agent)
	}
}

// burstHealth answers Watch with n alternating statuses, as fast as flow
// control lets it, then keeps the stream open until the client leaves.
type burstHealth struct {
	healthpb.UnimplementedHealthServer
	n int
}

func (h *burstHealth) Watch(_ *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	for i := range h.n {
		st := healthpb.HealthCheckResponse_SERVING
		if i%2 == 1 {
			st = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
			return err
		}
	}
	<-stream.Context().Done()
	return nil
}

// TestWatchReceivesEveryMessage sends far more than one flow-control
// window of messages: without WINDOW_UPDATEs the server would stall.
func TestWatchReceivesEveryMessage(t *testing.T) {
	const n = 50_000 // 7 bytes each: 350 KB, over five 64 KiB windows
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, &burstHealth{n: n}) })
	c := newConn(t, addr, Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream, err := healthpb.NewHealthClient(c).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		want := healthpb.HealthCheckResponse_SERVING
		if i%2 == 1 {
			want = healthpb.HealthCheckResponse_NOT_SERVING
		}
		if resp.GetStatus() != want {
			t.Fatalf("message %d = %v, want %v", i, resp.GetStatus(), want)
		}
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v, want CANCELED", err)
	}
}

// TestSlowReaderHoldsOneWindow: a caller that does not read makes the
// server wait instead of filling the client's memory.
func TestSlowReaderHoldsOneWindow(t *testing.T) {
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, &burstHealth{n: 50_000}) })
	c := newConn(t, addr, Options{})
	ws, err := healthpb.NewHealthClient(c).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	s := ws.(*grpc.GenericClientStream[healthpb.HealthCheckRequest, healthpb.HealthCheckResponse]).ClientStream.(*stream)
	buffered := func() int {
		s.t.mu.Lock()
		defer s.t.mu.Unlock()
		return len(s.buf)
	}
	waitFor(t, func() bool { return buffered() >= 60_000 }, "the window filled")
	// Nothing more may come: give a server that ignored the window the
	// time to send a lot more.
	time.Sleep(300 * time.Millisecond)
	if n := buffered(); n > 65535 {
		t.Errorf("%d bytes buffered for a caller that does not read; the window is 65535", n)
	}
}

func TestWatchPushesChanges(t *testing.T) {
	hs := health.NewServer()
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	c := newConn(t, addr, Options{})
	stream, err := healthpb.NewHealthClient(c).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []healthpb.HealthCheckResponse_ServingStatus{
		healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING,
	} {
		resp, err := stream.Recv()
		if err != nil || resp.GetStatus() != want {
			t.Fatalf("Recv = %v, %v; want %v", resp.GetStatus(), err, want)
		}
		next := healthpb.HealthCheckResponse_NOT_SERVING
		if want == next {
			next = healthpb.HealthCheckResponse_SERVING
		}
		hs.SetServingStatus("", next)
	}
	// A Check on the same connection while the stream is open.
	if got, err := check(t.Context(), c, "", 5*time.Second); err != nil || got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check beside the stream = %v, %v", got, err)
	}
}

// TestServerPingsAreAnswered: a server that pings its idle clients and
// closes those that do not answer keeps a quiet Watch stream open.
func TestServerPingsAreAnswered(t *testing.T) {
	hs := health.NewServer()
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) },
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 50 * time.Millisecond, Timeout: 100 * time.Millisecond}))
	c := newConn(t, addr, Options{})
	stream, err := healthpb.NewHealthClient(c).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // a dozen ping rounds: nothing to wait for
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if resp, err := stream.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Recv after the pings = %v, %v", resp.GetStatus(), err)
	}
}

func TestTimeouts(t *testing.T) {
	// Accepts and never says a word.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, nc)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range held {
			_ = nc.Close()
		}
	})
	c := newConn(t, ln.Addr().String(), Options{})
	start := time.Now()
	_, err = check(t.Context(), c, "", 200*time.Millisecond)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Check on a silent server = %v, want DEADLINE_EXCEEDED", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("the deadline was noticed after %v", elapsed)
	}
}

// slowHealth answers Check after a delay, ignoring the call's deadline.
type slowHealth struct {
	healthpb.UnimplementedHealthServer
	delay time.Duration
}

func (h *slowHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	time.Sleep(h.delay)
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

// TestSlowServerIsDeadlineExceeded: the server's own timer (from
// grpc-timeout) resets the call with CANCEL at about the moment the
// client's deadline passes; either way the call timed out.
func TestSlowServerIsDeadlineExceeded(t *testing.T) {
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, &slowHealth{delay: 300 * time.Millisecond}) })
	c := newConn(t, addr, Options{})
	for i := range 10 {
		if _, err := check(t.Context(), c, "", 20*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("Check %d on a slow server = %v, want DEADLINE_EXCEEDED", i, err)
		}
	}
}

func TestNotGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	c := newConn(t, ln.Addr().String(), Options{})
	_, err = check(t.Context(), c, "", 5*time.Second)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Check on an HTTP/1 server = %v, want UNAVAILABLE", err)
	}
	if pe := (*Error)(nil); !errors.As(err, &pe) || pe.Kind != KindNotGRPC {
		t.Errorf("Check on an HTTP/1 server = %#v, want an *Error of kind %v", err, KindNotGRPC)
	}
	if c.GetState() != connectivity.TransientFailure {
		t.Errorf("state = %v, want TRANSIENT_FAILURE", c.GetState())
	}
}

func TestRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	c := newConn(t, addr, Options{})
	_, err = check(t.Context(), c, "", 5*time.Second)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Check on a closed port = %v, want UNAVAILABLE", err)
	}
	if pe := (*Error)(nil); !errors.As(err, &pe) || pe.Kind != KindRefused || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Check on a closed port = %#v, want an *Error of kind %v wrapping ECONNREFUSED", err, KindRefused)
	}
	if c.GetState() != connectivity.TransientFailure {
		t.Errorf("state = %v, want TRANSIENT_FAILURE", c.GetState())
	}
}

// TestMessageTooLarge: a response above MaxRecvMessage fails the call
// with RESOURCE_EXHAUSTED and resets the stream; the connection stays.
func TestMessageTooLarge(t *testing.T) {
	big := func(_ any, stream grpc.ServerStream) error {
		return stream.SendMsg(&wrapperspb.BytesValue{Value: make([]byte, 100<<10)})
	}
	addr, _ := serve(t, nil, grpc.UnknownServiceHandler(big))
	c := newConn(t, addr, Options{MaxRecvMessage: 64 << 10})
	for range 2 { // the second on the same connection
		_, err := check(t.Context(), c, "", 5*time.Second)
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("Check answered with 100 KiB = %v, want RESOURCE_EXHAUSTED", err)
		}
	}
	if c.GetState() != connectivity.Ready {
		t.Errorf("state = %v, want READY", c.GetState())
	}
}

// TestGracefulDrain: after GOAWAY the Conn leaves READY, the stream
// already open goes on, and the connection closes once it ends.
func TestGracefulDrain(t *testing.T) {
	hs := health.NewServer()
	addr, srv := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	c := newConn(t, addr, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := healthpb.NewHealthClient(c).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		srv.GracefulStop() // sends GOAWAY, waits for the Watch to end
	}()
	waitFor(t, func() bool { return c.GetState() == connectivity.Idle }, "state IDLE after GOAWAY")
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if resp, err := stream.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Recv on the draining connection = %v, %v", resp.GetStatus(), err)
	}
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("GracefulStop still waiting 10 s after the stream was cancelled: no RST_STREAM sent?")
	}
	waitFor(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.all) == 0
	}, "the drained connection closed")
}

func TestCloseEndsCalls(t *testing.T) {
	hs := health.NewServer()
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	c := New(addr, Options{Dial: dial})
	stream, err := healthpb.NewHealthClient(c).Watch(t.Context(), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		errc <- err
	}()
	_ = c.Close()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Errorf("Recv across Close = %v, want CANCELED", err)
	}
	if c.GetState() != connectivity.Shutdown {
		t.Errorf("state = %v, want SHUTDOWN", c.GetState())
	}
	if _, err := check(t.Context(), c, "", time.Second); status.Code(err) != codes.Canceled {
		t.Errorf("Check after Close = %v, want CANCELED", err)
	}
}

// TestConcurrentCalls runs many Checks at once on one Conn (with -race).
func TestConcurrentCalls(t *testing.T) {
	hs := health.NewServer()
	addr, _ := serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
	c := newConn(t, addr, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := check(t.Context(), c, "", 5*time.Second); err != nil {
					errs <- err
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.all) != 1 {
		t.Errorf("%d connections, want 1", len(c.all))
	}
}

func TestClientStreamingRefused(t *testing.T) {
	c := newConn(t, "127.0.0.1:1", Options{})
	_, err := c.NewStream(t.Context(), &grpc.StreamDesc{ClientStreams: true}, "/x/y")
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("NewStream(client streaming) = %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
