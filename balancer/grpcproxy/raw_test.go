package grpcproxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// rawClient speaks HTTP/2 frames to the proxy, to send what well-behaved
// gRPC clients never send.
type rawClient struct {
	t    *testing.T
	nc   net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func dialRaw(t *testing.T, addr string, settings ...http2.Setting) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *rawClient) headers(id uint32, method, path string, end bool) {
	c.t.Helper()
	if err := c.tryHeaders(id, method, path, end); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) tryHeaders(id uint32, method, path string, end bool) error {
	c.hbuf.Reset()
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: path}, {Name: ":authority", Value: "vigil"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	} {
		_ = c.henc.WriteField(f)
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: end})
}

// message frames m as one gRPC message.
func grpcFrame(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	copy(out[5:], b)
	return out
}

// until reads frames until match returns true; SETTINGS are acked.
func (c *rawClient) until(what string, match func(http2.Frame) bool) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			_ = c.fr.WriteSettingsAck()
		}
		if match(f) {
			return
		}
	}
}

// closedByPeer tells whether the connection is closed (read EOF or reset)
// within the deadline.
func closedByPeer(nc net.Conn) bool {
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := nc.Read(buf); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

func TestBadClientInput(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})

	for name, junk := range map[string]string{
		"garbage":  "\x00\x01\x02 this is not HTTP/2 at all \xff\xfe",
		"http/1.1": "GET / HTTP/1.1\r\nHost: vigil\r\n\r\n",
	} {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(nc, junk)
		if !closedByPeer(nc) {
			t.Errorf("%s: connection not closed", name)
		}
		_ = nc.Close()
	}

	// A well-formed HTTP/2 request that is not gRPC (GET) gets HTTP 405
	// with a line saying what the listener serves.
	c := dialRaw(t, addr)
	c.headers(1, "GET", "/index.html", true)
	c.until("HTTP 405", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 1 && !h.StreamEnded() && h.PseudoValue("status") == "405"
	})
	var body []byte
	c.until("the 405's body", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		if ok && d.StreamID == 1 {
			body = append(body, d.Data()...)
		}
		return ok && d.StreamEnded()
	})
	if !bytes.Contains(body, []byte("only gRPC requests")) {
		t.Errorf("405 body %q", body)
	}

	// The proxy is fine.
	if _, err := testgrpc.NewTestServiceClient(dialClient(t, addr)).EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatalf("EmptyCall after bad input: %v", err)
	}
}

// A client that sends more than its stream window gets the stream reset
// (FLOW_CONTROL_ERROR): the proxy does not buffer what it did not allow.
func TestFlowControlOverrunIsReset(t *testing.T) {
	stuck := &scripted{
		unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			return &testgrpc.SimpleResponse{}, nil
		},
		duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
			<-stream.Context().Done() // never reads
			return nil
		},
	}
	be := startBackend(t, stuck)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	c := dialRaw(t, addr)
	c.headers(1, "POST", "/grpc.testing.TestService/FullDuplexCall", false)
	chunk := make([]byte, 16<<10)
	for sent := 0; sent < 3*streamWindow; sent += len(chunk) {
		if err := c.fr.WriteData(1, false, chunk); err != nil {
			break // the proxy may close first
		}
	}
	c.until("RST_STREAM FLOW_CONTROL_ERROR", func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		return ok && r.StreamID == 1 && r.ErrCode == http2.ErrCodeFlowControl
	})
	if _, err := testgrpc.NewTestServiceClient(dialClient(t, addr)).UnaryCall(ctxFor(t), &testgrpc.SimpleRequest{}); err != nil {
		t.Fatalf("UnaryCall after the overrun: %v", err)
	}
}

// A client that asks for a large stream and stops reading (with huge
// windows, so flow control does not stop the proxy) must not block the
// other clients of the same backend connection.
func TestClientThatStopsReadingBlocksNobody(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})

	c := dialRaw(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	if err := c.fr.WriteWindowUpdate(0, 1<<31-1-65535); err != nil {
		t.Fatal(err)
	}
	var params []*testgrpc.ResponseParameters
	for range 64 {
		params = append(params, &testgrpc.ResponseParameters{Size: 1 << 20})
	}
	c.headers(1, "POST", "/grpc.testing.TestService/StreamingOutputCall", false)
	if err := c.fr.WriteData(1, true, grpcFrame(t, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params})); err != nil {
		t.Fatal(err)
	}
	// ... and never reads. Other clients go on.
	tc := testgrpc.NewTestServiceClient(dialClient(t, addr))
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 1024})
		cancel()
		if err != nil {
			t.Fatalf("RPC %d while a client stalls: %v", i, err)
		}
	}
}

// Rapid reset (CVE-2023-44487): a client that opens and resets streams
// without end is sent away.
func TestRapidResetIsStopped(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	c := dialRaw(t, addr)
	id := uint32(1)
	stopped := false
	for range 3 * resetBurst {
		if c.tryHeaders(id, "POST", "/grpc.testing.TestService/FullDuplexCall", false) != nil ||
			c.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			stopped = true // the proxy closed the connection
			break
		}
		id += 2
	}
	if !stopped {
		// Everything was written before the proxy reacted: its GOAWAY
		// (or the connection's end, which may overtake it) must follow.
		_ = c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("the proxy let a rapid-reset client go on")
				}
				break
			}
			if g, ok := f.(*http2.GoAwayFrame); ok && g.ErrCode == http2.ErrCodeEnhanceYourCalm {
				break
			}
		}
	}
	if _, err := testgrpc.NewTestServiceClient(dialClient(t, addr)).EmptyCall(ctxFor(t), &testgrpc.Empty{}); err != nil {
		t.Fatalf("EmptyCall from another client: %v", err)
	}
}
