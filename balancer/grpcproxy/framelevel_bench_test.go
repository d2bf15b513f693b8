package grpcproxy

// A measured alternative, not shipped: a minimal frame-level HTTP/2
// forwarder (the way HAProxy and Envoy proxy gRPC) to compare its CPU per
// RPC with the grpc-go passthrough proxy. It handles only the happy path of
// the benchmark (one client connection, one backend connection, small
// messages within the initial windows, no errors): no per-stream flow
// control, no GOAWAY, no retries, no health service, no limits. What it
// does per RPC is what a complete one must do: decode the request headers,
// pick, re-encode them with the backend connection's HPACK state on a new
// stream ID, forward DATA, then the same back, batching writes per read.
//
//	go test -run '^$' -bench 'Unary1KiB$' -benchmem ./balancer/grpcproxy/

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// h2side is one HTTP/2 connection of the prototype with its writer.
type h2side struct {
	conn net.Conn
	br   *bufio.Reader
	fr   *http2.Framer // reads from br

	wmu  sync.Mutex
	bw   *bufio.Writer
	wfr  *http2.Framer // writes to bw
	henc *hpack.Encoder
	hbuf bytes.Buffer
}

func newH2side(conn net.Conn) *h2side {
	s := &h2side{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), bw: bufio.NewWriterSize(conn, 64<<10)}
	s.fr = http2.NewFramer(nil, s.br)
	s.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	s.fr.MaxHeaderListSize = 1 << 20
	s.wfr = http2.NewFramer(s.bw, nil)
	s.henc = hpack.NewEncoder(&s.hbuf)
	return s
}

// writeHeaders re-encodes fields with this connection's HPACK state.
func (s *h2side) writeHeaders(streamID uint32, fields []hpack.HeaderField, endStream bool) error {
	s.hbuf.Reset()
	for _, f := range fields {
		if err := s.henc.WriteField(f); err != nil {
			return err
		}
	}
	return s.wfr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: streamID, BlockFragment: s.hbuf.Bytes(), EndStream: endStream, EndHeaders: true,
	})
}

// frameProxy is the prototype: client connection <-> backend connection,
// stream IDs mapped, headers re-encoded.
type frameProxy struct {
	down, up *h2side
	mu       sync.Mutex
	nextUp   uint32
	toUp     map[uint32]uint32 // client stream -> backend stream
	toDown   map[uint32]uint32
}

const bigWindow = 1 << 30

func startFrameProxy(tb testing.TB, backendAddr string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns []net.Conn
	var connsMu sync.Mutex
	track := func(c net.Conn) {
		connsMu.Lock()
		defer connsMu.Unlock()
		conns = append(conns, c)
	}
	wg.Go(func() {
		for {
			cc, err := ln.Accept()
			if err != nil {
				return
			}
			bc, err := net.Dial("tcp", backendAddr)
			if err != nil {
				_ = cc.Close()
				continue
			}
			track(cc)
			track(bc)
			p := &frameProxy{down: newH2side(cc), up: newH2side(bc), nextUp: 1,
				toUp: map[uint32]uint32{}, toDown: map[uint32]uint32{}}
			wg.Go(func() { p.serve() })
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func (p *frameProxy) serve() {
	// Client preface in, server preface out; client preface to the backend.
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(p.down.br, preface[:]); err != nil {
		return
	}
	for _, s := range []*h2side{p.down, p.up} {
		s.wmu.Lock()
		if s == p.up {
			_, _ = s.bw.WriteString(http2.ClientPreface)
		}
		_ = s.wfr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: bigWindow})
		_ = s.wfr.WriteWindowUpdate(0, bigWindow)
		_ = s.bw.Flush()
		s.wmu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.pump(p.up, p.down, false)
	}()
	p.pump(p.down, p.up, true)
	_ = p.up.conn.Close()
	<-done
}

// pump reads frames from src and writes them to dst, flushing when src
// has nothing more buffered (one write per batch of reads). The two locks
// are never held together.
func (p *frameProxy) pump(src, dst *h2side, fromClient bool) {
	for {
		f, err := src.fr.ReadFrame()
		if err != nil {
			_ = dst.conn.Close()
			return
		}
		var ackSettings, ackPing bool
		var pingData [8]byte
		var credit uint32
		var creditStream uint32
		dst.wmu.Lock()
		switch f := f.(type) {
		case *http2.SettingsFrame:
			ackSettings = !f.IsAck()
		case *http2.PingFrame:
			ackPing, pingData = !f.IsAck(), f.Data
		case *http2.MetaHeadersFrame:
			id := p.mapStream(f.StreamID, fromClient, f.StreamEnded() && !fromClient)
			_ = dst.writeHeaders(id, f.Fields, f.StreamEnded())
		case *http2.DataFrame:
			id := p.mapStream(f.StreamID, fromClient, false)
			_ = dst.wfr.WriteData(id, f.StreamEnded(), f.Data())
			// Give the sender its window back at once (the prototype does
			// not hold data back: the benchmark stays within windows).
			credit, creditStream = uint32(len(f.Data())), f.StreamID
		case *http2.RSTStreamFrame:
			_ = dst.wfr.WriteRSTStream(p.mapStream(f.StreamID, fromClient, !fromClient), f.ErrCode)
		}
		idle := src.br.Buffered() == 0
		if idle {
			_ = dst.bw.Flush()
		}
		dst.wmu.Unlock()
		if ackSettings || ackPing || credit > 0 || idle {
			src.wmu.Lock()
			if ackSettings {
				_ = src.wfr.WriteSettingsAck()
			}
			if ackPing {
				_ = src.wfr.WritePing(true, pingData)
			}
			if credit > 0 {
				_ = src.wfr.WriteWindowUpdate(0, credit)
				_ = src.wfr.WriteWindowUpdate(creditStream, credit)
			}
			if idle && src.bw.Buffered() > 0 {
				_ = src.bw.Flush()
			}
			src.wmu.Unlock()
		}
	}
}

func (p *frameProxy) mapStream(id uint32, fromClient, last bool) uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !fromClient {
		down := p.toDown[id]
		if last {
			delete(p.toDown, id)
			delete(p.toUp, down)
		}
		return down
	}
	up, ok := p.toUp[id]
	if !ok {
		up = p.nextUp
		p.nextUp += 2
		p.toUp[id] = up
		p.toDown[up] = id
	}
	return up
}

func BenchmarkFrameLevelPrototypeUnary1KiB(b *testing.B) {
	be := startBackend(b, nil)
	addr := startFrameProxy(b, be.addr)
	tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
	ctx := context.Background()
	if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	measureCPU(b, func() {
		for range b.N {
			if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkFrameLevelPrototypeUnary1KiBParallel(b *testing.B) {
	be := startBackend(b, nil)
	addr := startFrameProxy(b, be.addr)
	tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
	if _, err := tc.UnaryCall(context.Background(), payload1K); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	measureCPU(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := tc.UnaryCall(ctx, payload1K); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
