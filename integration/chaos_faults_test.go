package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// chaosIDKey is the metadata key under which the chaos load tags every RPC,
// so that a fault front can tell which RPCs vigil sent to its endpoint.
const chaosIDKey = "chaos-id"

// chaosBackend is an in-process gRPC backend whose behaviour can be turned
// bad at run time: slow health answers and responses, a flapping health
// status. It serves grpc.health.v1 and grpc.testing.TestService (UnaryCall
// answers with its id as server_id).
type chaosBackend struct {
	id     string
	addr   string
	health *health.Server
	hits   atomic.Int64
	active atomic.Int64 // TestService handlers running
	// delay makes health Checks and TestService calls wait this long
	// first (or until their context ends).
	delay atomic.Int64
	// seen holds the chaos ids of the TestService calls that arrived, with
	// their metadata.
	seen sync.Map

	flapStop chan struct{}
	flapDone chan struct{}
	// flapChecks makes every health Check answer the opposite of the one
	// before (see flapPolled).
	flapChecks atomic.Bool
	lastCheck  atomic.Bool // the last Check answered SERVING
	// failCode, unless OK, fails every TestService call with that code
	// (after noting it) while health keeps its status.
	failCode atomic.Uint32
}

// failWith makes every TestService call fail with code (codes.OK: none),
// health untouched.
func (b *chaosBackend) failWith(code codes.Code) { b.failCode.Store(uint32(code)) }

func (b *chaosBackend) failed() error {
	if c := codes.Code(b.failCode.Load()); c != codes.OK {
		return status.Errorf(c, "backend %s told to fail", b.id)
	}
	return nil
}

func startChaosBackend(t testing.TB, id string) *chaosBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("backend %s: %v", id, err)
	}
	b := &chaosBackend{id: id, addr: ln.Addr().String(), health: health.NewServer()}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(b.unary), grpc.ChainStreamInterceptor(b.stream))
	healthpb.RegisterHealthServer(srv, &chaosHealth{b: b})
	testgrpc.RegisterTestServiceServer(srv, &chaosTestService{TestServiceServer: interop.NewTestServer(), b: b})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		b.flap(0)
		srv.Stop()
		<-done
	})
	return b
}

// wait sleeps the configured delay, or until ctx ends.
func (b *chaosBackend) wait(ctx context.Context) error {
	d := time.Duration(b.delay.Load())
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

// note remembers the chaos id of a call that arrived.
func (b *chaosBackend) note(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, id := range md.Get(chaosIDKey) {
		b.seen.Store(id, md.Copy())
	}
}

// arrived reports whether a call with chaos id id reached the backend.
func (b *chaosBackend) arrived(id string) bool {
	_, ok := b.seen.Load(id)
	return ok
}

// metadataOf returns the metadata a call with chaos id id arrived with.
func (b *chaosBackend) metadataOf(id string) (metadata.MD, bool) {
	md, ok := b.seen.Load(id)
	if !ok {
		return nil, false
	}
	return md.(metadata.MD), true
}

func (b *chaosBackend) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod != healthpb.Health_Check_FullMethodName {
		b.note(ctx)
		b.active.Add(1)
		defer b.active.Add(-1)
		if err := b.failed(); err != nil {
			return nil, err
		}
	}
	if err := b.wait(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (b *chaosBackend) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != healthpb.Health_Watch_FullMethodName {
		b.note(ss.Context())
		b.active.Add(1)
		defer b.active.Add(-1)
		if err := b.failed(); err != nil {
			return err
		}
		if err := b.wait(ss.Context()); err != nil {
			return err
		}
	}
	return handler(srv, ss)
}

func (b *chaosBackend) serving(ok bool) {
	if ok {
		b.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	} else {
		b.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
}

// flapPolled makes the health status, as a poller sees it, change at every
// Check (on stops it and leaves it SERVING). A status that changes on a
// clock cannot stand for this: a poller whose interval is a multiple of
// the flapping period sees the same phase every time on a quiet machine,
// so the transitions it sees depend on scheduling noise.
func (b *chaosBackend) flapPolled(on bool) {
	b.lastCheck.Store(false) // the first Check answers SERVING
	b.flapChecks.Store(on)
}

// flap turns the health status over every period (0 stops flapping and
// leaves it SERVING). The flapping goroutine is the backend's: stopped by
// flap(0) and by the test's cleanup.
func (b *chaosBackend) flap(period time.Duration) {
	if b.flapStop != nil {
		close(b.flapStop)
		<-b.flapDone
		b.flapStop, b.flapDone = nil, nil
	}
	b.serving(true)
	if period <= 0 {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	b.flapStop, b.flapDone = stop, done
	go func() {
		defer close(done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		up := true
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				up = !up
				b.serving(up)
			}
		}
	}()
}

type chaosHealth struct {
	healthpb.UnimplementedHealthServer
	b *chaosBackend
}

func (h *chaosHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if h.b.flapChecks.Load() {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if !h.b.lastCheck.Load() {
			st = healthpb.HealthCheckResponse_SERVING
		}
		h.b.lastCheck.Store(st == healthpb.HealthCheckResponse_SERVING)
		return &healthpb.HealthCheckResponse{Status: st}, nil
	}
	return h.b.health.Check(ctx, req)
}

func (h *chaosHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	return h.b.health.Watch(req, stream)
}

func (h *chaosHealth) List(ctx context.Context, req *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	return h.b.health.List(ctx, req)
}

type chaosTestService struct {
	testgrpc.TestServiceServer
	b *chaosBackend
}

func (s *chaosTestService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	resp, err := s.TestServiceServer.UnaryCall(ctx, req)
	if err != nil {
		return nil, err
	}
	s.b.hits.Add(1)
	resp.ServerId = s.b.id
	return resp, nil
}

// faultMode is what a fault front does with connections.
type faultMode int32

const (
	// modePass forwards to the real backend (and notes the RPCs).
	modePass faultMode = iota
	// modeBlackhole accepts and reads but never answers; connections open
	// when it starts freeze (nothing more is forwarded either way), as
	// when a host vanishes without closing anything.
	modeBlackhole
	// modeRestartBlackhole closes the open connections (the backend
	// restarted) and then accepts without ever answering (it came back
	// hung).
	modeRestartBlackhole
	// modeHTTP1 closes the open connections and answers new ones as an
	// HTTP/1.1 web server (net/http) would.
	modeHTTP1
	// modeGarbage closes the open connections and answers new ones with
	// random bytes.
	modeGarbage
	// modeReset closes the open connections and answers new ones as an
	// HTTP/2 server that resets every stream with INTERNAL_ERROR.
	modeReset
)

func (m faultMode) String() string {
	return [...]string{"pass", "blackhole", "restart-blackhole", "http1", "garbage", "reset"}[m]
}

// faultFront stands at an endpoint's address in front of a real backend and
// turns it into a faulty one on demand. It notes the chaos id of every RPC
// whose headers vigil sent to this address, whatever the mode: those RPCs
// reached the endpoint, and only they may fail because of its fault.
type faultFront struct {
	t      testing.TB
	ln     net.Listener
	addr   string
	target string
	http1  *http.Server
	h1ln   *chanListener

	// quiet, when set, notes RPCs only while armed (long runs keep only
	// what they may need to judge a failure).
	quiet, armed atomic.Bool

	mu      sync.Mutex
	mode    faultMode
	conns   map[*frontConn]struct{}
	reached map[string]bool
	closed  bool
	wg      sync.WaitGroup
}

type frontConn struct {
	down net.Conn // from vigil
	up   net.Conn // to the backend (pass mode)
	// frozen stops forwarding: what vigil sends is read and noted, nothing
	// goes anywhere.
	frozen atomic.Bool
}

func (c *frontConn) close() {
	_ = c.down.Close()
	if c.up != nil {
		_ = c.up.Close()
	}
}

func startFaultFront(t testing.TB, target string) *faultFront {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &faultFront{t: t, ln: ln, addr: ln.Addr().String(), target: target,
		conns: map[*frontConn]struct{}{}, reached: map[string]bool{}}
	f.h1ln = newChanListener(ln.Addr())
	f.http1 = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "<html>it works</html>\n")
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	f.wg.Add(2)
	go func() {
		defer f.wg.Done()
		_ = f.http1.Serve(f.h1ln)
	}()
	go func() {
		defer f.wg.Done()
		f.accept()
	}()
	t.Cleanup(f.close)
	return f
}

func (f *faultFront) close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.close()
	}
	f.mu.Unlock()
	_ = f.ln.Close()
	_ = f.http1.Close()
	f.wg.Wait()
}

// setMode changes what the front does, and what happens to the connections
// already open (see the modes).
func (f *faultFront) setMode(m faultMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = m
	for c := range f.conns {
		if m == modeBlackhole {
			c.frozen.Store(true)
			continue
		}
		c.close()
	}
}

// reachedIDs returns the chaos ids of the RPCs vigil sent here.
func (f *faultFront) reachedIDs() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]bool, len(f.reached))
	for id := range f.reached {
		out[id] = true
	}
	return out
}

func (f *faultFront) note(id string) {
	if f.quiet.Load() && !f.armed.Load() {
		return
	}
	f.mu.Lock()
	f.reached[id] = true
	f.mu.Unlock()
}

func (f *faultFront) accept() {
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			_ = nc.Close()
			return
		}
		mode := f.mode
		c := &frontConn{down: nc}
		if mode != modeHTTP1 {
			f.conns[c] = struct{}{}
		}
		f.wg.Add(1)
		f.mu.Unlock()
		go func() {
			defer f.wg.Done()
			defer func() {
				f.mu.Lock()
				delete(f.conns, c)
				f.mu.Unlock()
			}()
			f.serve(c, mode)
		}()
	}
}

func (f *faultFront) serve(c *frontConn, mode faultMode) {
	switch mode {
	case modePass:
		f.pass(c)
	case modeBlackhole, modeRestartBlackhole:
		defer c.close()
		f.noteRPCs(c.down)
	case modeHTTP1:
		if !f.h1ln.deliver(c.down) {
			c.close()
		}
	case modeGarbage:
		defer c.close()
		garbage := make([]byte, 4096)
		rng := rand.New(rand.NewPCG(1, 2)) // the same bytes every run
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		_, _ = c.down.Write(garbage)
		_, _ = io.Copy(io.Discard, c.down)
	case modeReset:
		defer c.close()
		f.resetAll(c.down)
	}
}

// pass forwards both ways, noting the RPCs on their way to the backend.
func (f *faultFront) pass(c *frontConn) {
	defer c.close()
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		return
	}
	f.mu.Lock()
	c.up = up
	closed := f.closed
	f.mu.Unlock()
	if closed {
		_ = up.Close()
		return
	}
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // backend -> vigil
		defer wg.Done()
		defer c.close()
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			if n > 0 && !c.frozen.Load() {
				if _, werr := c.down.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	go func() { // the parser of what vigil sends
		defer wg.Done()
		f.noteRPCs(pr)
		_, _ = io.Copy(io.Discard, pr)
	}()
	buf := make([]byte, 32<<10)
	for { // vigil -> backend
		n, err := c.down.Read(buf)
		if n > 0 {
			if _, perr := pw.Write(buf[:n]); perr != nil {
				break
			}
			if !c.frozen.Load() {
				if _, werr := up.Write(buf[:n]); werr != nil {
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	_ = pw.Close()
	c.close()
	wg.Wait()
}

// noteRPCs reads an HTTP/2 client's bytes and notes the chaos id of every
// request's headers, until the bytes end or stop being HTTP/2.
func (f *faultFront) noteRPCs(r io.Reader) {
	br := bufio.NewReader(r)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	fr := http2.NewFramer(io.Discard, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 16 << 20
	fr.SetMaxReadFrameSize(16 << 20)
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			return
		}
		if h, ok := frame.(*http2.MetaHeadersFrame); ok {
			if id := h.PseudoValue("path"); id != "" {
				for _, hf := range h.RegularFields() {
					if hf.Name == chaosIDKey {
						f.note(hf.Value)
					}
				}
			}
		}
	}
}

// resetAll speaks HTTP/2 as a server and resets every stream it is sent.
func (f *faultFront) resetAll(nc net.Conn) {
	br := bufio.NewReader(nc)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, preface); err != nil || string(preface) != http2.ClientPreface {
		return
	}
	bw := bufio.NewWriter(nc)
	fr := http2.NewFramer(bw, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 16 << 20
	fr.SetMaxReadFrameSize(16 << 20)
	if fr.WriteSettings() != nil || bw.Flush() != nil {
		return
	}
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			return
		}
		switch frame := frame.(type) {
		case *http2.SettingsFrame:
			if !frame.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !frame.IsAck() {
				err = fr.WritePing(true, frame.Data)
			}
		case *http2.MetaHeadersFrame:
			for _, hf := range frame.RegularFields() {
				if hf.Name == chaosIDKey {
					f.note(hf.Value)
				}
			}
			err = fr.WriteRSTStream(frame.StreamID, http2.ErrCodeInternal)
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			return
		}
	}
}

// chanListener hands connections accepted elsewhere to an http.Server.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// chaosCtx tags ctx with a chaos id.
func chaosCtx(ctx context.Context, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, chaosIDKey, id)
}

// codeOf is the gRPC code of err, wrapped or not.
func codeOf(err error) codes.Code {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return status.Code(err)
}

func (f *faultFront) String() string { return fmt.Sprintf("front %s -> %s", f.addr, f.target) }
