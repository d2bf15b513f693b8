package grpcproxy

import (
	"bytes"
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
)

// request is what a scripted backend read of one stream.
type request struct {
	id   uint32
	data []byte
}

// readRequests reads frames, acking SETTINGS, and hands each request whose
// END_STREAM arrived (or, with headersOnly, each new HEADERS) to got;
// it returns when the connection ends or got returns false.
func (b *h2Backend) readRequests(headersOnly bool, got func(request) bool) {
	data := map[uint32][]byte{}
	for {
		f, err := b.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = b.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			data[f.StreamID] = []byte{}
			if (headersOnly || f.StreamEnded()) && !got(request{id: f.StreamID}) {
				return
			}
		case *http2.DataFrame:
			if n := f.Length; n > 0 {
				// Connection window back at once; streams are short.
				_ = b.fr.WriteWindowUpdate(0, n)
			}
			if _, ok := data[f.StreamID]; !ok {
				continue // a stream this loop did not see start
			}
			data[f.StreamID] = append(data[f.StreamID], f.Data()...)
			if f.StreamEnded() && !headersOnly && !got(request{id: f.StreamID, data: data[f.StreamID]}) {
				return
			}
		}
	}
}

// answer sends a gRPC response with message msg and status OK.
func (b *h2Backend) answer(id uint32, msg []byte) error {
	if err := b.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true,
		BlockFragment: b.headerBlock(hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"})}); err != nil {
		return err
	}
	for len(msg) > 0 {
		n := min(len(msg), 16<<10)
		if err := b.fr.WriteData(id, false, msg[:n]); err != nil {
			return err
		}
		msg = msg[n:]
	}
	return b.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, EndHeaders: true, EndStream: true,
		BlockFragment: b.headerBlock(hpack.HeaderField{Name: "grpc-status", Value: "0"})})
}

// A stream the backend never processed (REFUSED_STREAM, or above a
// GOAWAY's last-stream-id) is sent again, with its data, and the client
// sees only the answer.
func TestUnprocessedStreamsAreReplayed(t *testing.T) {
	payload := bytes.Repeat([]byte("v"), 20<<10) // more than one DATA frame
	msg := append([]byte{0, 0, 0, 0x50, 0}, payload...)
	msg[1], msg[2], msg[3], msg[4] = byte(len(payload)>>24), byte(len(payload)>>16), byte(len(payload)>>8), byte(len(payload))

	tests := []struct {
		name   string
		reason string
		// first serves the backend's first connection; later ones answer.
		first func(b *h2Backend)
	}{
		{"REFUSED_STREAM", ReplayRefused, func(b *h2Backend) {
			b.readRequests(true, func(r request) bool {
				_ = b.fr.WriteRSTStream(r.id, http2.ErrCodeRefusedStream)
				return false
			})
		}},
		{"GOAWAY before any stream", ReplayGoAway, func(b *h2Backend) {
			b.readRequests(true, func(request) bool {
				_ = b.fr.WriteGoAway(0, http2.ErrCodeNo, nil)
				return false
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int64
			var mu sync.Mutex
			var answered []request
			done := make(chan struct{})
			defer close(done)
			fb := startFakeBackend(t, func(nc net.Conn) {
				b, err := acceptH2(nc)
				if err != nil {
					return
				}
				if conns.Add(1) == 1 {
					tt.first(b)
					if tt.reason == ReplayGoAway {
						<-done
						return // closes the connection
					}
				}
				b.readRequests(false, func(r request) bool {
					mu.Lock()
					answered = append(answered, r)
					mu.Unlock()
					return b.answer(r.id, msg) == nil
				})
			})
			m := newRecordingMetrics()
			_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, fb.addr)), Options{Metrics: m})
			c := dialRaw(t, addr)
			c.headers(1, "POST", "/grpc.testing.TestService/UnaryCall", false)
			c.dataFrames(1, msg)
			var got []byte
			c.until("the answer", func(f http2.Frame) bool {
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					t.Fatalf("the client got RST_STREAM %v", f.ErrCode)
				case *http2.DataFrame:
					got = append(got, f.Data()...)
				case *http2.MetaHeadersFrame:
					if f.StreamEnded() {
						if s := grpcStatus(f); s != "0" {
							t.Fatalf("grpc-status %s: %v", s, f.Fields)
						}
						return true
					}
				}
				return false
			})
			if !bytes.Equal(got, msg) {
				t.Errorf("the client got %d bytes; want the backend's %d", len(got), len(msg))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(answered) != 1 || !bytes.Equal(answered[0].data, msg) {
				t.Errorf("the backend answered %d requests (want 1, with the client's %d bytes replayed)", len(answered), len(msg))
			}
			if n := m.replays(tt.reason); n != 1 {
				t.Errorf("%d replays counted for %s; want 1", n, tt.reason)
			}
		})
	}
}

// Streams above a GOAWAY's last-stream-id are replayed; those below it
// finish where they are.
func TestStreamsAboveGoAwayAreReplayed(t *testing.T) {
	const calls = 8
	var conns atomic.Int64
	fb := startFakeBackend(t, func(nc net.Conn) {
		b, err := acceptH2(nc)
		if err != nil {
			return
		}
		first := conns.Add(1) == 1
		var pending []uint32
		gone := false
		b.readRequests(false, func(r request) bool {
			if !first {
				return b.answer(r.id, r.data) == nil
			}
			if gone {
				return true
			}
			// The first connection gets every call, goes away with half of
			// them processed (as grpc-js at its max connection age: no
			// PING first) and answers those; the others it never looks at.
			pending = append(pending, r.id)
			if len(pending) < calls {
				return true
			}
			gone = true
			_ = b.fr.WriteGoAway(pending[calls/2-1], http2.ErrCodeNo, nil)
			for _, id := range pending[:calls/2] {
				_ = b.answer(id, []byte{0, 0, 0, 0, 0})
			}
			return true
		})
	})
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, fb.addr)), Options{Metrics: m})
	c := dialRaw(t, addr)
	for i := range calls {
		id := uint32(2*i + 1)
		c.headers(id, "POST", "/grpc.testing.TestService/UnaryCall", false)
		if err := c.fr.WriteData(id, true, []byte{0, 0, 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
	}
	ok := 0
	c.until("every answer", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			t.Fatalf("stream %d: the client got RST_STREAM %v", f.StreamID, f.ErrCode)
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				if s := grpcStatus(f); s != "0" {
					t.Fatalf("stream %d: grpc-status %s", f.StreamID, s)
				}
				ok++
			}
		}
		return ok == calls
	})
	t.Logf("%d calls answered, %d replayed after the GOAWAY", ok, m.replays(ReplayGoAway))
	if n := m.replays(ReplayGoAway); n != calls/2 {
		t.Errorf("%d replays; want %d (the calls the first connection did not take)", n, calls/2)
	}
}

// A request that outgrew the replay buffer before the backend refused it
// is not replayed: the client gets the refusal as it came.
func TestRefusalPassesOnceRequestOutgrewReplay(t *testing.T) {
	fb := startFakeBackend(t, func(nc net.Conn) {
		b, err := acceptH2(nc, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		if err != nil || b.fr.WriteWindowUpdate(0, 1<<20) != nil {
			return
		}
		b.readRequests(false, func(r request) bool {
			return b.fr.WriteRSTStream(r.id, http2.ErrCodeRefusedStream) == nil
		})
	})
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, fb.addr)), Options{Metrics: m})
	c := dialRaw(t, addr)
	c.headers(1, "POST", "/grpc.testing.TestService/UnaryCall", false)
	big := make([]byte, maxReplay+1)
	big[1], big[2], big[3], big[4] = 0, byte((len(big)-5)>>16), byte((len(big)-5)>>8), byte(len(big)-5)
	c.dataFrames(1, big)
	c.until("RST_STREAM REFUSED_STREAM", func(f http2.Frame) bool {
		r, ok := f.(*http2.RSTStreamFrame)
		if ok && r.ErrCode != http2.ErrCodeRefusedStream {
			t.Fatalf("RST_STREAM %v", r.ErrCode)
		}
		return ok
	})
	if n := m.replays(ReplayRefused); n != 0 {
		t.Errorf("%d replays; want none", n)
	}
}

// dataFrames sends b on stream id in frames of at most 16 KiB, the last
// with END_STREAM.
func (c *rawClient) dataFrames(id uint32, b []byte) {
	c.t.Helper()
	for {
		n := min(len(b), 16<<10)
		if err := c.fr.WriteData(id, n == len(b), b[:n]); err != nil {
			c.t.Fatal(err)
		}
		if b = b[n:]; len(b) == 0 {
			return
		}
	}
}

// BenchmarkReplayRefused prices a transparent retry: unary 1 KiB calls
// through the proxy to a scripted backend that answers every request
// ("answered"), or refuses every first attempt with REFUSED_STREAM and
// answers the replay ("refused-once"). The difference in cpu-ns/op
// (client, proxy and backend in this process) is the retry's cost.
func BenchmarkReplayRefused(b *testing.B) {
	for _, mode := range []string{"answered", "refused-once"} {
		b.Run(mode, func(b *testing.B) {
			fb := startFakeBackendTB(b, func(nc net.Conn) {
				hb, err := acceptH2(nc, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
				if err != nil || hb.fr.WriteWindowUpdate(0, 1<<20) != nil {
					return
				}
				n := 0
				hb.readRequests(false, func(r request) bool {
					n++
					if mode == "refused-once" && n%2 == 1 {
						return hb.fr.WriteRSTStream(r.id, http2.ErrCodeRefusedStream) == nil
					}
					return hb.answer(r.id, []byte{0, 0, 0, 0, 0}) == nil
				})
			})
			m := newRecordingMetrics()
			_, addr := startProxy(b, clusterOf(b, nil, endpointFor(b, fb.addr)), Options{Metrics: m})
			tc := testgrpc.NewTestServiceClient(dialClient(b, addr))
			ctx := context.Background()
			req := &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 1024)}}
			b.ReportAllocs()
			b.ResetTimer()
			measureCPU(b, func() {
				for range b.N {
					if _, err := tc.UnaryCall(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(m.replays(ReplayRefused))/float64(b.N), "replays/op")
		})
	}
}

// rawUnaryCalls runs calls EmptyCalls on one raw client connection,
// inflight at a time, and counts those that did not end with grpc-status
// 0 (a reset, or another status).
func rawUnaryCalls(t *testing.T, addr string, calls, inflight int) (failed int) {
	t.Helper()
	c := dialRaw(t, addr)
	empty := []byte{0, 0, 0, 0, 0}
	next, opened := uint32(1), 0
	open := func() {
		if opened == calls {
			return
		}
		opened++
		c.headers(next, "POST", "/grpc.testing.TestService/EmptyCall", false)
		if err := c.fr.WriteData(next, true, empty); err != nil {
			t.Fatal(err)
		}
		next += 2
	}
	for range inflight {
		open()
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for done := 0; done < calls; {
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
			failed++
			done++
			open()
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				if grpcStatus(f) != "0" {
					failed++
				}
				done++
				open()
			}
		}
	}
	return failed
}

// A backend that drains its connections at a maximum connection age loses
// no call through the proxy, even for a client that retries nothing.
func TestBackendMaxConnectionAgeLosesNothing(t *testing.T) {
	be := startBackend(t, nil, grpc.KeepaliveParams(keepalive.ServerParameters{
		MaxConnectionAge: 50 * time.Millisecond, MaxConnectionAgeGrace: 10 * time.Second,
	}))
	m := newRecordingMetrics()
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{Metrics: m})
	if failed := rawUnaryCalls(t, addr, 3000, 16); failed > 0 {
		t.Errorf("%d of 3000 calls failed while the backend cycled its connections", failed)
	}
	t.Logf("replayed after GOAWAY: %d, after REFUSED_STREAM: %d", m.replays(ReplayGoAway), m.replays(ReplayRefused))
}
