package grpcproxy

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fieldsHeaders writes a header list as given, for requests no
// well-behaved client sends.
func (c *rawClient) fieldsHeaders(id uint32, fields []hpack.HeaderField, end bool, prio *http2.PriorityParam) error {
	c.hbuf.Reset()
	for _, f := range fields {
		_ = c.henc.WriteField(f)
	}
	p := http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: end}
	if prio != nil {
		p.Priority = *prio
	}
	return c.fr.WriteHeaders(p)
}

func grpcRequestFields(path string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "vigil"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...)
}

// Every malformed request of RFC 9113 8.1.1 gets a stream error
// PROTOCOL_ERROR and never reaches the backend; the connection goes on.
func TestMalformedRequestsAreRefused(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	const path = "/grpc.testing.TestService/EmptyCall"
	without := func(name string) []hpack.HeaderField {
		var out []hpack.HeaderField
		for _, f := range grpcRequestFields(path) {
			if f.Name != name {
				out = append(out, f)
			}
		}
		return out
	}
	empty := grpcFrame(t, &testgrpc.Empty{})
	tests := []struct {
		name     string
		fields   []hpack.HeaderField
		prio     *http2.PriorityParam
		data     []byte // sent with END_STREAM after the headers
		trailers []hpack.HeaderField
		trailEnd bool
	}{
		{name: "uppercase field name", fields: grpcRequestFields(path, hpack.HeaderField{Name: "X-Upper", Value: "1"})},
		{name: "connection", fields: grpcRequestFields(path, hpack.HeaderField{Name: "connection", Value: "keep-alive"})},
		{name: "keep-alive", fields: grpcRequestFields(path, hpack.HeaderField{Name: "keep-alive", Value: "5"})},
		{name: "transfer-encoding", fields: grpcRequestFields(path, hpack.HeaderField{Name: "transfer-encoding", Value: "chunked"})},
		{name: "upgrade", fields: grpcRequestFields(path, hpack.HeaderField{Name: "upgrade", Value: "h2c"})},
		{name: "proxy-connection", fields: grpcRequestFields(path, hpack.HeaderField{Name: "proxy-connection", Value: "close"})},
		{name: "te gzip", fields: append(without("te"), hpack.HeaderField{Name: "te", Value: "gzip"})},
		{name: "no :method", fields: without(":method")},
		{name: "no :scheme", fields: without(":scheme")},
		{name: "no :path", fields: without(":path")},
		{name: "empty :path", fields: append([]hpack.HeaderField{{Name: ":path", Value: ""}}, without(":path")...)},
		{name: "duplicated :path", fields: append([]hpack.HeaderField{{Name: ":path", Value: path}}, grpcRequestFields(path)...)},
		{name: ":status in a request", fields: append([]hpack.HeaderField{{Name: ":status", Value: "200"}}, grpcRequestFields(path)...)},
		{name: "unknown pseudo-header", fields: append([]hpack.HeaderField{{Name: ":foo", Value: "bar"}}, grpcRequestFields(path)...)},
		{name: ":protocol", fields: append([]hpack.HeaderField{{Name: ":protocol", Value: "websocket"}}, grpcRequestFields(path)...)},
		{name: "pseudo-header after a regular one", fields: append(grpcRequestFields(path), hpack.HeaderField{Name: ":authority", Value: "x"})},
		{name: "content-length not a number", fields: grpcRequestFields(path, hpack.HeaderField{Name: "content-length", Value: "-1"})},
		{name: "content-length larger than the DATA", fields: grpcRequestFields(path, hpack.HeaderField{Name: "content-length", Value: "100"}), data: empty},
		{name: "content-length smaller than the DATA", fields: grpcRequestFields(path, hpack.HeaderField{Name: "content-length", Value: "1"}), data: empty},
		{name: "self-dependent stream", fields: grpcRequestFields(path), prio: &http2.PriorityParam{StreamDep: 1, Weight: 15}},
		{name: "pseudo-header in trailers", fields: grpcRequestFields(path), trailers: []hpack.HeaderField{{Name: ":path", Value: path}}, trailEnd: true},
		{name: "trailers without END_STREAM", fields: grpcRequestFields(path), trailers: []hpack.HeaderField{{Name: "x-trailer", Value: "1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := be.calls.Load()
			c := dialRaw(t, addr)
			end := tt.data == nil && tt.trailers == nil
			if err := c.fieldsHeaders(1, tt.fields, end, tt.prio); err != nil {
				t.Fatal(err)
			}
			if tt.data != nil {
				if err := c.fr.WriteData(1, true, tt.data); err != nil {
					t.Fatal(err)
				}
			}
			if tt.trailers != nil {
				if err := c.fieldsHeaders(1, tt.trailers, tt.trailEnd, nil); err != nil {
					t.Fatal(err)
				}
			}
			c.until("RST_STREAM PROTOCOL_ERROR", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					if f.StreamID == 1 && f.ErrCode != http2.ErrCodeProtocol {
						t.Fatalf("RST_STREAM %v; want PROTOCOL_ERROR", f.ErrCode)
					}
					return f.StreamID == 1
				case *http2.MetaHeadersFrame:
					if f.StreamID == 1 {
						t.Fatalf("answered with headers %v; want RST_STREAM PROTOCOL_ERROR", f.Fields)
					}
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v; want a stream error", f.ErrCode)
				}
				return false
			})
			// The connection serves the next request.
			c.headers(3, "POST", path, false)
			if err := c.fr.WriteData(3, true, empty); err != nil {
				t.Fatal(err)
			}
			c.until("the next request's status", func(f http2.Frame) bool {
				h, ok := f.(*http2.MetaHeadersFrame)
				return ok && h.StreamID == 3 && grpcStatus(h) == "0"
			})
			if got := be.calls.Load() - before; got != 1 {
				t.Errorf("the backend ran %d RPCs; want 1 (the well-formed one)", got)
			}
		})
	}
}

// Frames on streams in the wrong state are answered as RFC 9113 5.1 says.
func TestStreamStates(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	const path = "/grpc.testing.TestService/EmptyCall"
	empty := grpcFrame(t, &testgrpc.Empty{})
	unary := func(c *rawClient, id uint32) {
		c.headers(id, "POST", path, false)
		if err := c.fr.WriteData(id, true, empty); err != nil {
			t.Fatal(err)
		}
		c.until("the status", func(f http2.Frame) bool {
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == id && h.StreamEnded()
		})
	}
	connErr := func(name string, send func(c *rawClient)) {
		t.Run(name, func(t *testing.T) {
			c := dialRaw(t, addr)
			send(c)
			if g := readGoAway(t, c); g.ErrCode != http2.ErrCodeProtocol {
				t.Errorf("GOAWAY %v; want PROTOCOL_ERROR", g.ErrCode)
			}
		})
	}
	connErr("DATA on an idle stream", func(c *rawClient) { _ = c.fr.WriteData(1, true, empty) })
	connErr("RST_STREAM on an idle stream", func(c *rawClient) { _ = c.fr.WriteRSTStream(1, http2.ErrCodeCancel) })
	connErr("WINDOW_UPDATE on an idle stream", func(c *rawClient) { _ = c.fr.WriteWindowUpdate(1, 100) })
	connErr("PRIORITY of an idle stream on itself", func(c *rawClient) {
		_ = c.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1})
	})
	connErr("HEADERS on a closed stream", func(c *rawClient) {
		unary(c, 1)
		c.headers(1, "POST", path, true)
	})
	connErr("a stream id lower than one opened", func(c *rawClient) {
		unary(c, 5)
		c.headers(3, "POST", path, true)
	})
	t.Run("DATA on a closed stream", func(t *testing.T) {
		c := dialRaw(t, addr)
		unary(c, 1)
		_ = c.fr.WriteData(1, true, empty)
		c.until("RST_STREAM STREAM_CLOSED", func(f http2.Frame) bool {
			r, ok := f.(*http2.RSTStreamFrame)
			return ok && r.StreamID == 1 && r.ErrCode == http2.ErrCodeStreamClosed
		})
	})
	t.Run("frames sent before our reset arrived are ignored", func(t *testing.T) {
		c := dialRaw(t, addr)
		// A malformed request, reset by the proxy; the client's DATA was
		// already on its way.
		if err := c.fieldsHeaders(1, grpcRequestFields(path, hpack.HeaderField{Name: "te", Value: "x"}), false, nil); err != nil {
			t.Fatal(err)
		}
		c.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok })
		_ = c.fr.WriteData(1, true, empty)
		unary(c, 3)
		_ = c.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				break
			}
			if r, ok := f.(*http2.RSTStreamFrame); ok {
				t.Fatalf("second RST_STREAM %v on stream %d", r.ErrCode, r.StreamID)
			}
		}
	})
}

// A client that keeps exactly max_concurrent_streams streams open, opening
// the next the moment it reads a stream's END_STREAM (as C-core does), is
// never refused: the proxy stops counting a stream when it queues that
// END_STREAM (RFC 9113 5.1.2).
func TestClientAtStreamLimitIsNeverRefused(t *testing.T) {
	be := startBackend(t, nil)
	const limit = 4
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{MaxConcurrentStreams: limit})
	c := dialRaw(t, addr)
	empty := grpcFrame(t, &testgrpc.Empty{})
	next := uint32(1)
	open := func() {
		c.headers(next, "POST", "/grpc.testing.TestService/EmptyCall", false)
		if err := c.fr.WriteData(next, true, empty); err != nil {
			t.Fatal(err)
		}
		next += 2
	}
	for range limit {
		open()
	}
	const calls = 3000
	done, refused := 0, 0
	_ = c.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	for done < calls {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d calls: %v", done, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = c.fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				refused++
			}
			done++
			open()
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				done++
				open()
			}
		}
	}
	if refused > 0 {
		t.Errorf("%d of %d calls refused at the stream limit", refused, calls)
	}
}

// MadeYouReset (CVE-2025-8671): frames that make the proxy reset streams
// (a zero WINDOW_UPDATE increment, a window overflow, DATA after
// END_STREAM) end the backend stream at once, and past the reset budget
// the connection gets GOAWAY ENHANCE_YOUR_CALM.
func TestMadeYouResetIsStopped(t *testing.T) {
	var running, peak, started atomic.Int64
	svc := &scripted{
		unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return &testgrpc.SimpleResponse{}, nil
		},
		duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
			started.Add(1)
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			<-stream.Context().Done()
			return nil
		},
	}
	be := startBackend(t, svc)
	const limit = 10
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{MaxConcurrentStreams: limit})
	provoke := []func(c *rawClient, id uint32) error{
		func(c *rawClient, id uint32) error { return c.fr.WriteWindowUpdate(id, 0) },
		func(c *rawClient, id uint32) error {
			if err := c.fr.WriteWindowUpdate(id, 1<<31-1); err != nil {
				return err
			}
			return c.fr.WriteWindowUpdate(id, 1<<31-1)
		},
		func(c *rawClient, id uint32) error {
			if err := c.fr.WriteData(id, true, nil); err != nil {
				return err
			}
			return c.fr.WriteData(id, false, []byte{0})
		},
	}
	// The backend connection is up: every stream reaches the backend.
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	if _, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, addr)
	c.fr.AllowIllegalWrites = true
	id := uint32(1)
	stopped := false
	for i := range 3 * resetBurst {
		if c.tryHeaders(id, "POST", "/grpc.testing.TestService/FullDuplexCall", false) != nil ||
			provoke[i%len(provoke)](c, id) != nil {
			stopped = true
			break
		}
		id += 2
	}
	if !stopped {
		_ = c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				break // closed: its GOAWAY may have been lost in the reset
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Logf("GOAWAY %v %q after stream %d", g.ErrCode, g.DebugData(), g.LastStreamID)
				if g.ErrCode != http2.ErrCodeEnhanceYourCalm {
					t.Errorf("GOAWAY %v; want ENHANCE_YOUR_CALM", g.ErrCode)
				}
				break
			}
		}
	}
	waitFor(t, "every backend stream ended", func() bool { return running.Load() == 0 })
	t.Logf("%d backend streams started, at most %d at once", started.Load(), peak.Load())
	if peak.Load() > limit {
		t.Errorf("%d backend streams ran at once; the client's limit is %d", peak.Load(), limit)
	}
	if started.Load() >= 2*resetBurst {
		t.Errorf("%d backend streams started; the reset budget is %d", started.Load(), resetBurst)
	}
	if _, err := tc.UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall from another client: %v", err)
	}
}

// A request whose header list is over the backend's
// SETTINGS_MAX_HEADER_LIST_SIZE is never sent to it: RESOURCE_EXHAUSTED,
// as the backend's own limit would answer a direct client.
func TestBackendMaxHeaderListSizeIsHonoured(t *testing.T) {
	be := startBackend(t, nil, grpc.MaxHeaderListSize(4096))
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	// Twice: before and after the backend's SETTINGS are known.
	for i := range 2 {
		ctx := metadata.AppendToOutgoingContext(ctxFor(t), "x-big", strings.Repeat("v", 8000))
		_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "SETTINGS_MAX_HEADER_LIST_SIZE") {
			t.Errorf("call %d with 8 KB of metadata through a backend that takes 4 KiB: %v; want RESOURCE_EXHAUSTED naming the limit", i, err)
		}
		if _, err := tc.EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
			t.Fatalf("a small call: %v", err)
		}
	}
	if n := be.calls.Load(); n != 2 {
		t.Errorf("the backend ran %d calls; want the 2 small ones", n)
	}
}
