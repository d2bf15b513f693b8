package grpcproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/balancer"
)

// fakeBackend accepts connections on loopback and hands each to serve, to
// behave as real backends never do (or do only when broken).
type fakeBackend struct {
	addr     string
	accepted atomic.Int64
}

func startFakeBackend(t *testing.T, serve func(nc net.Conn)) *fakeBackend {
	return startFakeBackendTB(t, serve)
}

func startFakeBackendTB(t testing.TB, serve func(nc net.Conn)) *fakeBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	fb := &fakeBackend{addr: ln.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			fb.accepted.Add(1)
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() {
				defer func() { _ = nc.Close() }()
				serve(nc)
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, nc := range conns {
			_ = nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return fb
}

// hang holds a connection open without a byte: a hung backend.
func hang(nc net.Conn) { _, _ = io.Copy(io.Discard, nc) }

// h2Backend is the server side of a scripted HTTP/2 connection.
type h2Backend struct {
	nc   net.Conn
	fr   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

// acceptH2 reads the client preface and answers SETTINGS with settings.
func acceptH2(nc net.Conn, settings ...http2.Setting) (*h2Backend, error) {
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(nc, preface[:]); err != nil {
		return nil, err
	}
	b := &h2Backend{nc: nc, fr: http2.NewFramer(nc, nc)}
	b.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	b.fr.MaxHeaderListSize = 64 << 20
	b.henc = hpack.NewEncoder(&b.hbuf)
	return b, b.fr.WriteSettings(settings...)
}

// nextRequest reads frames until a request's HEADERS and returns its
// stream id.
func (b *h2Backend) nextRequest() (uint32, error) {
	for {
		f, err := b.fr.ReadFrame()
		if err != nil {
			return 0, err
		}
		if h, ok := f.(*http2.MetaHeadersFrame); ok {
			return h.StreamID, nil
		}
	}
}

// headerBlock HPACK-encodes fields.
func (b *h2Backend) headerBlock(fields ...hpack.HeaderField) []byte {
	b.hbuf.Reset()
	for _, f := range fields {
		_ = b.henc.WriteField(f)
	}
	return append([]byte(nil), b.hbuf.Bytes()...)
}

// poolOf returns the proxy's pool for ep, or nil.
func poolOf(p *Proxy, ep *balancer.Endpoint) *upPool {
	v, ok := p.pools.Load(ep)
	if !ok {
		return nil
	}
	return v.(*upPool)
}

// retained counts the connections a pool's slice still references,
// spare capacity included.
func (pl *upPool) retained() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	n := 0
	for _, uc := range pl.conns[:cap(pl.conns)] {
		if uc != nil {
			n++
		}
	}
	return n
}

func (pl *upPool) lastError() error {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.lastErr
}

// A backend that is not HTTP/2 fails the handshake on its first bytes,
// not at a timeout, and the failed connection is not kept.
func TestNotHTTP2BackendFailsHandshakeAtOnce(t *testing.T) {
	old := upHandshakeTimeout
	upHandshakeTimeout = time.Minute // a timeout would fail the test
	t.Cleanup(func() { upHandshakeTimeout = old })

	http1 := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "<html>it works</html>\n")
	})}
	h1ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served sync.WaitGroup
	served.Go(func() { _ = http1.Serve(h1ln) })
	t.Cleanup(func() {
		_ = http1.Close()
		served.Wait()
	})
	garbage := startFakeBackend(t, func(nc net.Conn) {
		_, _ = nc.Write([]byte("\x17\x03\x03\x00\x20 random bytes, not a SETTINGS frame"))
		hang(nc)
	})
	// A SETTINGS frame header announcing 4 MiB: a 16 MiB frame limit
	// would wait for (and buffer) that payload.
	bigFrame := startFakeBackend(t, func(nc net.Conn) {
		_, _ = nc.Write([]byte{0x40, 0, 0, byte(http2.FrameSettings), 0, 0, 0, 0, 0})
		hang(nc)
	})

	for _, tt := range []struct {
		name, addr, want string
	}{
		{"HTTP/1.1", h1ln.Addr().String(), "an HTTP/1 server"},
		{"garbage", garbage.addr, "not a SETTINGS frame"},
		{"4 MiB first frame", bigFrame.addr, "not a SETTINGS frame"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ep := endpointFor(t, tt.addr)
			p, addr := startProxy(t, clusterOf(t, nil, ep), Options{})
			tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
			_, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
			st := status.Convert(err)
			if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), tt.want) {
				t.Fatalf("EmptyCall = %v; want UNAVAILABLE saying %q", err, tt.want)
			}
			pl := poolOf(p, ep)
			waitFor(t, "the failed connection dropped", func() bool { return pl.retained() == 0 })
		})
	}
}

// A backend that accepts and never answers costs an RPC at most the
// handshake timeout: the RPC, never sent, moves to another endpoint.
func TestHungBackendHandshakeTimesOut(t *testing.T) {
	old := upHandshakeTimeout
	upHandshakeTimeout = 100 * time.Millisecond
	t.Cleanup(func() { upHandshakeTimeout = old })
	hung := startFakeBackend(t, hang)
	good := startBackend(t, nil)
	epHung := endpointFor(t, hung.addr)
	p, addr := startProxy(t, clusterOf(t, nil, epHung, endpointFor(t, good.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	for i := range 4 {
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			t.Fatalf("RPC %d: %v", i, err)
		}
	}
	if hung.accepted.Load() == 0 {
		t.Fatal("no RPC was picked for the hung backend")
	}
	if err := poolOf(p, epHung).lastError(); err == nil || !strings.Contains(err.Error(), "no HTTP/2 SETTINGS within") {
		t.Errorf("hung endpoint's error = %v; want the handshake timeout", err)
	}
}

// RPCs queued on a connection in its handshake move on as soon as the
// endpoint is evicted (excluded) or removed, not at the handshake timeout.
func TestQueuedRPCsMoveWhenEndpointExcluded(t *testing.T) {
	old := upHandshakeTimeout
	upHandshakeTimeout = time.Hour // only the exclusion can move the RPCs
	t.Cleanup(func() { upHandshakeTimeout = old })

	for _, tt := range []struct {
		name  string
		leave func(cl *balancer.Cluster, hung, good *balancer.Endpoint)
		why   string // in the log record of the failed connection
	}{
		// The health checker excludes an evicted endpoint at once; a
		// snapshot without it is built later.
		{"evicted", func(_ *balancer.Cluster, hung, _ *balancer.Endpoint) { hung.SetExcluded(true) }, "was evicted while connecting"},
		// A removed endpoint leaves the snapshot first, and is closed
		// once drained.
		{"removed", func(cl *balancer.Cluster, hung, good *balancer.Endpoint) {
			setHealthy(cl, nil, good)
			hung.Close()
		}, "was removed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hung := startFakeBackend(t, hang)
			good := startBackend(t, nil)
			epHung, epGood := endpointFor(t, hung.addr), endpointFor(t, good.addr)
			cl := clusterOf(t, nil, epHung, epGood)
			var logs syncBuffer
			p, addr := startProxy(t, cl, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
			const n = 4
			errs := make(chan error, n)
			for range n {
				go func() {
					_, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
					errs <- err
				}()
			}
			queued := func() int {
				pl := poolOf(p, epHung)
				if pl == nil {
					return 0
				}
				pl.mu.Lock()
				defer pl.mu.Unlock()
				if len(pl.conns) != 1 {
					return 0
				}
				uc := pl.conns[0]
				uc.w.mu.Lock()
				defer uc.w.mu.Unlock()
				return len(uc.queue)
			}
			waitFor(t, "every RPC served or queued on the hung backend's connection", func() bool {
				return queued() > 0 && queued()+int(good.calls.Load()) == n
			})
			tt.leave(cl, epHung, epGood)
			for range n {
				if err := <-errs; err != nil {
					t.Errorf("RPC: %v; want it moved to the healthy endpoint", err)
				}
			}
			if good.calls.Load() != n {
				t.Errorf("healthy backend served %d of %d RPCs", good.calls.Load(), n)
			}
			if !strings.Contains(logs.String(), tt.why) {
				t.Errorf("the hung connection did not fail because its endpoint %s; log:\n%s", tt.why, logs.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// readGoAway reads until a GOAWAY and then the connection's end.
func readGoAway(t *testing.T, c *rawClient) *http2.GoAwayFrame {
	t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ga *http2.GoAwayFrame
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open; GOAWAY %v", ga)
			}
			return ga
		}
		if g, ok := f.(*http2.GoAwayFrame); ok && ga == nil {
			ga = g
		}
	}
}

// SETTINGS and WINDOW_UPDATE values a client may not send are connection
// errors (RFC 9113 6.5.2, 6.9.1).
func TestInvalidClientSettingsAreConnectionErrors(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	for _, tt := range []struct {
		name string
		send func(c *rawClient) error
		want http2.ErrCode
	}{
		{"ENABLE_PUSH=2", func(c *rawClient) error {
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		}, http2.ErrCodeProtocol},
		{"MAX_FRAME_SIZE=16383", func(c *rawClient) error {
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16383})
		}, http2.ErrCodeProtocol},
		{"MAX_FRAME_SIZE=2^24", func(c *rawClient) error {
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
		}, http2.ErrCodeProtocol},
		{"INITIAL_WINDOW_SIZE=2^31", func(c *rawClient) error {
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"connection window over 2^31-1", func(c *rawClient) error {
			return c.fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
		{"stream window over 2^31-1 with INITIAL_WINDOW_SIZE", func(c *rawClient) error {
			c.headers(1, "POST", "/grpc.testing.TestService/FullDuplexCall", false)
			if err := c.fr.WriteWindowUpdate(1, 1<<31-1-65535); err != nil {
				return err
			}
			return c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
		}, http2.ErrCodeFlowControl},
		{"PUSH_PROMISE", func(c *rawClient) error {
			return c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"even stream id", func(c *rawClient) error { return c.tryHeaders(2, "POST", "/grpc.testing.TestService/EmptyCall", true) },
			http2.ErrCodeProtocol},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			if err := tt.send(c); err != nil {
				t.Fatal(err)
			}
			ga := readGoAway(t, c)
			if ga == nil || ga.ErrCode != tt.want {
				t.Fatalf("GOAWAY = %v; want %v", ga, tt.want)
			}
		})
	}
	// Valid extremes are accepted, and the proxy serves on.
	c := dialRaw(t, addr,
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1<<24 - 1},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	c.headers(1, "POST", "/grpc.testing.TestService/EmptyCall", false)
	if err := c.fr.WriteData(1, true, grpcFrame(t, &testgrpc.Empty{})); err != nil {
		t.Fatal(err)
	}
	c.until("the RPC's OK status", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 1 && h.StreamEnded() && grpcStatus(h) == "0"
	})
}

// DATA after the client's END_STREAM resets the stream (STREAM_CLOSED).
func TestClientDataAfterEndStreamIsReset(t *testing.T) {
	stuck := &scripted{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
		<-stream.Context().Done()
		return nil
	}}
	be := startBackend(t, stuck)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	c := dialRaw(t, addr)
	c.headers(1, "POST", "/grpc.testing.TestService/FullDuplexCall", true)
	if err := c.fr.WriteData(1, false, []byte("late")); err != nil {
		t.Fatal(err)
	}
	c.until("RST_STREAM STREAM_CLOSED", func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == 1 && r.ErrCode == http2.ErrCodeStreamClosed
	})
}

func grpcStatus(h *http2.MetaHeadersFrame) string {
	for _, f := range h.Fields {
		if f.Name == "grpc-status" {
			return f.Value
		}
	}
	return ""
}

// A backend's invalid SETTINGS fail its connection: in the handshake the
// RPC moves on (nothing was sent), later the backend gets a GOAWAY.
func TestInvalidBackendSettings(t *testing.T) {
	for _, tt := range []struct {
		name string
		bad  http2.Setting
		want http2.ErrCode
	}{
		{"ENABLE_PUSH=1", http2.Setting{ID: http2.SettingEnablePush, Val: 1}, http2.ErrCodeProtocol},
		{"MAX_FRAME_SIZE=1", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1}, http2.ErrCodeProtocol},
	} {
		t.Run(tt.name+" in the handshake", func(t *testing.T) {
			bad := startFakeBackend(t, func(nc net.Conn) {
				if _, err := acceptH2(nc, tt.bad); err == nil {
					hang(nc)
				}
			})
			epBad := endpointFor(t, bad.addr)
			good := startBackend(t, nil)
			p, addr := startProxy(t, clusterOf(t, nil, epBad, endpointFor(t, good.addr)), Options{})
			tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
			for i := range 4 {
				if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
					t.Fatalf("RPC %d: %v", i, err)
				}
			}
			if err := poolOf(p, epBad).lastError(); err == nil || !strings.Contains(err.Error(), "SETTINGS") {
				t.Errorf("bad endpoint's error = %v; want invalid SETTINGS", err)
			}
		})
		t.Run(tt.name+" later", func(t *testing.T) {
			goAway := make(chan *http2.GoAwayFrame, 1)
			bad := startFakeBackend(t, func(nc net.Conn) {
				b, err := acceptH2(nc)
				if err != nil {
					return
				}
				if _, err := b.nextRequest(); err != nil {
					return
				}
				if err := b.fr.WriteSettings(tt.bad); err != nil {
					return
				}
				for {
					f, err := b.fr.ReadFrame()
					if err != nil {
						return
					}
					if g, ok := f.(*http2.GoAwayFrame); ok {
						goAway <- g
						return
					}
				}
			})
			_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, bad.addr)), Options{})
			tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
			_, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
			if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "broke HTTP/2") {
				t.Errorf("EmptyCall = %v; want UNAVAILABLE, the backend broke HTTP/2", err)
			}
			select {
			case g := <-goAway:
				if g.ErrCode != tt.want {
					t.Errorf("backend got GOAWAY %v; want %v", g.ErrCode, tt.want)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the backend got no GOAWAY")
			}
		})
	}
}

// overLimitBlock HPACK-encodes fields, fillers, and marker, in two parts:
// the fillers take the header list to about 1,000 bytes under
// maxHeaderListSize, and marker (over 1,000 bytes, encoded in less than
// 2,000) goes over it. Sent with tail as the last CONTINUATION, the list
// is what x/net's framer truncates without an error: the frame is not
// large enough for it to give up on the connection.
// enc writes to buf and holds the connection's HPACK state.
func overLimitBlock(enc *hpack.Encoder, buf *bytes.Buffer, fields []hpack.HeaderField, marker hpack.HeaderField) (head, tail []byte) {
	buf.Reset()
	var total uint32
	for _, f := range fields {
		total += f.Size()
		_ = enc.WriteField(f)
	}
	const target = maxHeaderListSize - 1000
	for i := 0; total < target; i++ {
		name := fmt.Sprintf("x-fill-%03d", i)
		n := max(0, min(8000, int(target-total)-len(name)-32))
		f := hpack.HeaderField{Name: name, Value: strings.Repeat("v", n)}
		total += f.Size()
		_ = enc.WriteField(f)
	}
	head = bytes.Clone(buf.Bytes())
	buf.Reset()
	_ = enc.WriteField(marker)
	return head, bytes.Clone(buf.Bytes())
}

// lastMarker is a field of 1,500 bytes.
func lastMarker(name string) hpack.HeaderField {
	return hpack.HeaderField{Name: name, Value: strings.Repeat("v", 1500-len(name))}
}

// writeBlock writes the concatenation of blocks as HEADERS and
// CONTINUATION frames of at most 16 KiB, each block starting a frame.
func writeBlock(fr *http2.Framer, id uint32, end bool, blocks ...[]byte) error {
	first := true
	for i, block := range blocks {
		for len(block) > 0 || (first && i == len(blocks)-1) {
			n := min(len(block), defaultMaxFrame)
			chunk, rest := block[:n], block[n:]
			last := len(rest) == 0 && i == len(blocks)-1
			var err error
			if first {
				err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: chunk, EndStream: end, EndHeaders: last})
				first = false
			} else {
				err = fr.WriteContinuation(id, last, chunk)
			}
			if err != nil {
				return err
			}
			block = rest
		}
	}
	return nil
}

// A request whose header list goes over the limit only in its last frame
// (the framer then truncates it without an error) is refused with
// RESOURCE_EXHAUSTED, and nothing of it reaches a backend.
func TestTruncatedRequestHeadersRefused(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	c := dialRaw(t, addr)
	head, tail := overLimitBlock(c.henc, &c.hbuf, []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/grpc.testing.TestService/EmptyCall"}, {Name: ":authority", Value: "vigil"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, lastMarker("authorization"))
	if err := writeBlock(c.fr, 1, false, head, tail); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteData(1, true, grpcFrame(t, &testgrpc.Empty{})); err != nil {
		t.Fatal(err)
	}
	var got string
	c.until("the RPC's status", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok && h.StreamID == 1 && h.StreamEnded() {
			got = grpcStatus(h)
			return true
		}
		return false
	})
	if got != "8" {
		t.Errorf("grpc-status = %q; want 8 (RESOURCE_EXHAUSTED)", got)
	}
	if be.calls.Load() != 0 {
		t.Errorf("the truncated request reached the backend")
	}

	// A list just under the limit is forwarded whole, its last field
	// included: the chaos suite's 130 fields of 8,000 bytes plus an
	// authorization (1,045,631 bytes counted as RFC 7541 does).
	fields := []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/grpc.testing.TestService/EmptyCall"}, {Name: ":authority", Value: "vigil"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}
	for i := range 130 {
		fields = append(fields, hpack.HeaderField{Name: fmt.Sprintf("x-big-%02d", i), Value: strings.Repeat("v", 8000)})
	}
	fields = append(fields, hpack.HeaderField{Name: "authorization", Value: "Bearer the-last-header"})
	var size uint32
	c.hbuf.Reset()
	for _, f := range fields {
		size += f.Size()
		_ = c.henc.WriteField(f)
	}
	if size > maxHeaderListSize {
		t.Fatalf("header list of %d bytes; want it under the limit", size)
	}
	if err := writeBlock(c.fr, 3, false, bytes.Clone(c.hbuf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteData(3, true, grpcFrame(t, &testgrpc.Empty{})); err != nil {
		t.Fatal(err)
	}
	c.until("the second RPC's status", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		if ok && h.StreamID == 3 && h.StreamEnded() {
			got = grpcStatus(h)
			return true
		}
		return false
	})
	md, _ := be.last()
	if got != "0" || len(md["authorization"]) != 1 || md["authorization"][0] != "Bearer the-last-header" {
		t.Errorf("a header list of %d bytes: grpc-status %q, authorization %q at the backend; want OK and the header", size, got, md["authorization"])
	}
}

// A backend's response headers or trailers over the limit fail the RPC
// with INTERNAL instead of reaching the client without their end.
func TestTruncatedResponseHeadersRefused(t *testing.T) {
	for _, trailers := range []bool{false, true} {
		name := "headers"
		if trailers {
			name = "trailers"
		}
		t.Run(name, func(t *testing.T) {
			fb := startFakeBackend(t, func(nc net.Conn) {
				b, err := acceptH2(nc)
				if err != nil {
					return
				}
				for {
					id, err := b.nextRequest()
					if err != nil {
						return
					}
					response := []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"}}
					if trailers {
						_ = writeBlock(b.fr, id, false, b.headerBlock(response...))
						_ = b.fr.WriteData(id, false, []byte{0, 0, 0, 0, 0})
						head, tail := overLimitBlock(b.henc, &b.hbuf, nil, hpack.HeaderField{Name: "grpc-status", Value: "0" + strings.Repeat(" ", 1500)})
						_ = writeBlock(b.fr, id, true, head, tail)
						continue
					}
					head, tail := overLimitBlock(b.henc, &b.hbuf, response, lastMarker("x-last"))
					_ = writeBlock(b.fr, id, false, head, tail)
				}
			})
			_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, fb.addr)), Options{})
			tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
			_, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
			if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(st.Message(), "header list over the limit") {
				t.Fatalf("EmptyCall = %v; want INTERNAL, header list over the limit", err)
			}
			// The connection serves on.
			_, err = tc.EmptyCall(ctxFor(t), &testgrpc.Empty{})
			if status.Code(err) != codes.Internal {
				t.Fatalf("second EmptyCall = %v; want INTERNAL again", err)
			}
		})
	}
}

// A backend that grants a large window and then stops reading (frozen)
// fails its connection once a write to it makes no progress, instead of
// stalling the client connection whose stream writes to it.
func TestFrozenBackendDoesNotStallClients(t *testing.T) {
	old := upWriteTimeout
	upWriteTimeout = 300 * time.Millisecond
	t.Cleanup(func() { upWriteTimeout = old })
	thawed := make(chan struct{})
	requested := make(chan struct{}, 1)
	frozen := startFakeBackend(t, func(nc net.Conn) {
		b, err := acceptH2(nc, http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
		if err != nil {
			return
		}
		if b.fr.WriteWindowUpdate(0, maxWindow-65535) != nil {
			return
		}
		if _, err := b.nextRequest(); err != nil {
			return
		}
		requested <- struct{}{}
		<-thawed // reads nothing more
	})
	t.Cleanup(func() { close(thawed) })
	good := startBackend(t, nil)
	epFrozen, epGood := endpointFor(t, frozen.addr), endpointFor(t, good.addr)
	cl := clusterOf(t, nil, epFrozen)
	_, addr := startProxy(t, cl, Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))

	stream, err := tc.StreamingInputCall(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	chunk := &testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 1<<20)}}
	if err := stream.Send(chunk); err != nil {
		t.Fatal(err)
	}
	select {
	case <-requested:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not reach the frozen backend")
	}
	setHealthy(cl, nil, epGood) // the next RPCs go elsewhere
	// Far more than the socket buffers take: the proxy's writes block
	// until the stream fails.
	for range 64 {
		if stream.Send(chunk) != nil {
			break // the stream failed: its status follows
		}
	}
	_, err = stream.CloseAndRecv()
	if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "i/o timeout") {
		t.Errorf("stream to the frozen backend: %v; want UNAVAILABLE after a write timeout", err)
	}
	// The same client connection serves on.
	if _, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{ResponseSize: 10}); err != nil {
		t.Fatalf("RPC after the frozen backend: %v", err)
	}
}

// gate is a UnaryCall handler that holds calls until released, counting
// those it holds.
type gate struct {
	held    atomic.Int64
	release chan struct{}
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) unary(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	g.held.Add(1)
	defer g.held.Add(-1)
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return &testgrpc.SimpleResponse{}, nil
}

// queuedAndConns counts a pool's connections and the RPCs queued on them.
func (pl *upPool) queuedAndConns() (queued, conns int) {
	if pl == nil {
		return 0, 0
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for _, uc := range pl.conns {
		uc.w.mu.Lock()
		queued += len(uc.queue)
		uc.w.mu.Unlock()
	}
	return queued, len(pl.conns)
}

// A backend's SETTINGS_MAX_CONCURRENT_STREAMS is respected, even by the
// RPCs queued before it was known: they use more connections, up to
// maxConnsPerEndpoint, and then wait for a slot; none is refused.
func TestBackendStreamLimit(t *testing.T) {
	t.Run("more connections", func(t *testing.T) {
		g := newGate()
		be := startBackend(t, &scripted{unary: g.unary}, grpc.MaxConcurrentStreams(2))
		m := newRecordingMetrics()
		ep := endpointFor(t, be.addr)
		p, addr := startProxy(t, clusterOf(t, nil, ep), Options{Metrics: m})
		tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
		const n = 8
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{})
				errs <- err
			}()
		}
		// All of them at once at the backend: on 4 connections.
		waitFor(t, "every RPC at the backend", func() bool { return g.held.Load() == n })
		if _, conns := poolOf(p, ep).queuedAndConns(); conns != n/2 {
			t.Errorf("%d connections for %d RPCs at 2 streams each; want %d", conns, n, n/2)
		}
		close(g.release)
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("RPC: %v", err)
			}
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.finished["UNAVAILABLE"] != 0 {
			t.Errorf("%d RPCs refused by the backend", m.finished["UNAVAILABLE"])
		}
	})
	t.Run("at most maxConnsPerEndpoint", func(t *testing.T) {
		g := newGate()
		be := startBackend(t, &scripted{unary: g.unary}, grpc.MaxConcurrentStreams(1))
		ep := endpointFor(t, be.addr)
		p, addr := startProxy(t, clusterOf(t, nil, ep), Options{})
		tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
		const n = maxConnsPerEndpoint + 6
		errs := make(chan error, n)
		for range n {
			go func() {
				_, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{})
				errs <- err
			}()
		}
		waitFor(t, "the connections full and the rest queued", func() bool {
			queued, conns := poolOf(p, ep).queuedAndConns()
			return g.held.Load() == maxConnsPerEndpoint && conns == maxConnsPerEndpoint && queued == n-maxConnsPerEndpoint
		})
		close(g.release)
		for range n {
			if err := <-errs; err != nil {
				t.Errorf("RPC: %v", err)
			}
		}
	})
	t.Run("no stream at all", func(t *testing.T) {
		none := startFakeBackend(t, func(nc net.Conn) {
			if _, err := acceptH2(nc, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 0}); err == nil {
				hang(nc)
			}
		})
		good := startBackend(t, nil)
		epNone := endpointFor(t, none.addr)
		p, addr := startProxy(t, clusterOf(t, nil, epNone, endpointFor(t, good.addr)), Options{})
		tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
		for i := range 4 {
			if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
				t.Fatalf("RPC %d: %v", i, err)
			}
		}
		if err := poolOf(p, epNone).lastError(); err == nil || !strings.Contains(err.Error(), "allows no stream") {
			t.Errorf("endpoint's error = %v; want: allows no stream", err)
		}
	})
}
