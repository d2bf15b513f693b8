package grpcproxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/vigil-proxy/vigil/internal/h2wire"
)

// fuzzFields are the header fields a fuzzed HEADERS or CONTINUATION frame
// picks from (one byte each): a valid gRPC request's, and the ones RFC 9113
// calls malformed.
var fuzzFields = []hpack.HeaderField{
	{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
	{Name: ":path", Value: "/grpc.testing.TestService/UnaryCall"}, {Name: ":authority", Value: "vigil"},
	{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	{Name: ":path", Value: "/grpc.health.v1.Health/Check"}, {Name: ":method", Value: "GET"},
	{Name: ":path", Value: ""}, {Name: ":status", Value: "200"}, {Name: ":protocol", Value: "x"},
	{Name: "te", Value: "gzip"}, {Name: "connection", Value: "close"}, {Name: "Upper", Value: "1"},
	{Name: "content-length", Value: "5"}, {Name: "content-length", Value: "x"},
	{Name: "grpc-timeout", Value: "1S"}, {Name: "host", Value: "h"}, {Name: "x-bin", Value: "\x00\x01"},
	{Name: "grpc-encoding", Value: "gzip"}, {Name: ":method", Value: "CONNECT"},
	{Name: "x-big", Value: string(bytes.Repeat([]byte("v"), 4000))},
}

// fuzzFrames turns fuzz input into HTTP/2 frames after a valid preface:
// each op byte chooses a frame kind, the next bytes its stream, flags and
// contents. It reaches deeper than raw bytes would, and raw frames (op 0)
// keep everything else reachable.
func fuzzFrames(in []byte) []byte {
	var out bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	var hbuf bytes.Buffer
	henc := hpack.NewEncoder(&hbuf)
	next := func() byte {
		if len(in) == 0 {
			return 0
		}
		b := in[0]
		in = in[1:]
		return b
	}
	take := func(n int) []byte {
		n = min(n, len(in))
		b := in[:n]
		in = in[n:]
		return b
	}
	fields := func(n int) []byte {
		hbuf.Reset()
		for range n {
			_ = henc.WriteField(fuzzFields[int(next())%len(fuzzFields)])
		}
		return append([]byte(nil), hbuf.Bytes()...)
	}
	for frames := 0; len(in) > 0 && frames < 64; frames++ {
		op, sid, flags := next(), uint32(next()%8), next()
		switch op % 11 {
		case 0: // raw frame
			payload := take(int(next()))
			_ = fr.WriteRawFrame(http2.FrameType(next()%12), http2.Flags(flags), sid, payload)
		case 1:
			p := http2.HeadersFrameParam{StreamID: sid, BlockFragment: fields(int(next() % 12)),
				EndStream: flags&1 != 0, EndHeaders: flags&4 != 0}
			if flags&0x20 != 0 {
				p.Priority = http2.PriorityParam{StreamDep: uint32(next() % 8), Weight: next()}
			}
			if flags&8 != 0 {
				p.PadLength = next()
			}
			_ = fr.WriteHeaders(p)
		case 2:
			_ = fr.WriteContinuation(sid, flags&4 != 0, fields(int(next()%4)))
		case 3:
			n := int(next()) * 64
			if flags&2 != 0 {
				_ = fr.WriteDataPadded(sid, flags&1 != 0, make([]byte, n), make([]byte, next()))
			} else {
				// A gRPC message: a 5-byte prefix that may lie.
				msg := make([]byte, 5+n%200)
				binary.BigEndian.PutUint32(msg[1:], uint32(n))
				_ = fr.WriteData(sid, flags&1 != 0, msg)
			}
		case 4:
			_ = fr.WriteRSTStream(sid, http2.ErrCode(next()%14))
		case 5:
			incr := binary.BigEndian.Uint32(append(take(4), 0, 0, 0, 0)[:4]) & (1<<31 - 1)
			_ = fr.WriteWindowUpdate(sid, incr)
		case 6:
			val := binary.BigEndian.Uint32(append(take(4), 0, 0, 0, 0)[:4])
			if flags&1 != 0 {
				_ = fr.WriteSettingsAck()
			} else {
				_ = fr.WriteSettings(http2.Setting{ID: http2.SettingID(next() % 8), Val: val})
			}
		case 7:
			_ = fr.WritePriority(sid, http2.PriorityParam{StreamDep: uint32(next() % 8), Weight: next(), Exclusive: flags&1 != 0})
		case 8:
			_ = fr.WritePing(flags&1 != 0, [8]byte{next()})
		case 9:
			_ = fr.WriteGoAway(sid, http2.ErrCode(next()%14), nil)
		case 10:
			// A valid unary call, so that streams reach the backend.
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid | 1, BlockFragment: fields2(henc, &hbuf), EndHeaders: true})
			_ = fr.WriteData(sid|1, true, []byte{0, 0, 0, 0, 0})
		}
	}
	return out.Bytes()
}

func fields2(henc *hpack.Encoder, hbuf *bytes.Buffer) []byte {
	hbuf.Reset()
	for _, f := range fuzzFields[:6] {
		_ = henc.WriteField(f)
	}
	return append([]byte(nil), hbuf.Bytes()...)
}

// judgeBackend is a scripted backend that answers every request and
// records a request the proxy should never have forwarded.
type judgeBackend struct {
	mu        sync.Mutex
	malformed []string
}

func (j *judgeBackend) serve(nc net.Conn) {
	b, err := acceptH2(nc, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	if err != nil || b.fr.WriteWindowUpdate(0, 1<<20) != nil {
		return
	}
	b.fr.MaxHeaderListSize = maxHeaderListSize
	// Answers are written by a goroutine of their own, as real servers
	// write: a backend that stops reading while it writes would stall the
	// proxy's synchronous writes to it (the frozen-backend case, tested
	// elsewhere), which is not what this target explores.
	writes := make(chan func(), 4096)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(writes)
	wg.Go(func() {
		for w := range writes {
			w()
		}
	})
	write := func(w func()) {
		select {
		case writes <- w:
		default: // more than a connection of the fuzzer holds
		}
	}
	answer := func(id uint32) { write(func() { _ = b.answer(id, []byte{0, 0, 0, 0, 0}) }) }
	open := map[uint32]bool{}
	for {
		f, err := b.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				j.bad(fmt.Sprintf("stream %d: %v", se.StreamID, err))
				continue
			}
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if open[f.StreamID] {
				j.bad(fmt.Sprintf("stream %d: trailers forwarded", f.StreamID))
				continue
			}
			open[f.StreamID] = true
			req, err := h2wire.CheckRequest(f.Fields)
			switch {
			case err != nil:
				j.bad(fmt.Sprintf("stream %d: %v", f.StreamID, err))
			case !req.IsGRPC():
				j.bad(fmt.Sprintf("stream %d: not gRPC: %v", f.StreamID, f.Fields))
			}
			for _, hf := range f.Fields {
				if hf.Name == "host" {
					j.bad("host forwarded")
				}
			}
			if f.StreamEnded() {
				answer(f.StreamID)
			}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				write(func() { _ = b.fr.WriteSettingsAck() })
			}
		case *http2.DataFrame:
			if n := f.Length; n > 0 {
				write(func() { _ = b.fr.WriteWindowUpdate(0, n) })
			}
			if f.StreamEnded() && open[f.StreamID] {
				answer(f.StreamID)
			}
		}
	}
}

func (j *judgeBackend) bad(what string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.malformed = append(j.malformed, what)
}

func (j *judgeBackend) take() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	m := j.malformed
	j.malformed = nil
	return m
}

// FuzzClientFrames sends arbitrary frame sequences, after a valid preface,
// to a grpc listener in front of a backend that judges what reaches it:
// the proxy must not panic, must forward no malformed request, and must
// end every connection it was given (no goroutine or stream left behind).
//
//	go test -run '^$' -fuzz '^FuzzClientFrames$' -fuzztime 10m ./balancer/grpcproxy/
func FuzzClientFrames(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	judge := &judgeBackend{}
	fb := startFakeBackendTB(f, judge.serve)
	p, addr := startProxy(f, clusterOf(f, nil, endpointFor(f, fb.addr)), Options{MaxConcurrentStreams: 4, MaxMessageSize: 1 << 16})
	f.Fuzz(func(t *testing.T, in []byte) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		var pre bytes.Buffer
		pre.WriteString(http2.ClientPreface)
		_ = http2.NewFramer(&pre, nil).WriteSettings()
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = nc.Write(pre.Bytes())
		_, _ = nc.Write(fuzzFrames(in))
		// Read what the proxy answers until it closes the connection or
		// has been quiet for a while.
		buf := make([]byte, 64<<10)
		for {
			_ = nc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			if _, err := nc.Read(buf); err != nil {
				break
			}
		}
		_ = nc.Close()
		waitFor(t, "the proxy to let go of the connection", func() bool {
			p.connsMu.Lock()
			defer p.connsMu.Unlock()
			return len(p.conns) == 0
		})
		if bad := judge.take(); len(bad) > 0 {
			t.Fatalf("forwarded to the backend: %v", bad)
		}
	})
}

// fuzzSeeds are the h2spec cases and the hardening tests, in fuzzFrames'
// encoding.
func fuzzSeeds() [][]byte {
	valid := []byte{0, 1, 2, 3, 4, 5} // the indexes of a valid request's fields
	headers := func(sid, flags byte, fields ...byte) []byte {
		return append([]byte{1, sid, flags, byte(len(fields))}, fields...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	return [][]byte{
		{10, 1, 0}, // a valid call
		cat(headers(1, 4, valid...), []byte{3, 1, 1, 1}), // headers, then DATA with END_STREAM
		{3, 1, 1, 1},            // DATA on an idle stream
		{4, 1, 0, 8},            // RST_STREAM on an idle stream
		{5, 1, 0, 0, 0, 0, 100}, // WINDOW_UPDATE on an idle stream
		cat(headers(1, 4, valid...), []byte{5, 1, 0, 0, 0, 0, 0}),                                              // zero increment
		cat(headers(1, 4, valid...), []byte{5, 1, 0, 0x7f, 0xff, 0xff, 0xff, 5, 1, 0, 0x7f, 0xff, 0xff, 0xff}), // window overflow
		cat(headers(1, 5, valid...), []byte{3, 1, 1, 1}),                                                       // DATA on a half-closed stream
		cat(headers(1, 5, valid...), headers(1, 5, valid...)),                                                  // HEADERS on a half-closed stream
		cat(headers(5, 5, valid...), headers(3, 5, valid...)),                                                  // a lower stream id
		headers(1, 5, 0, 1, 2, 3, 4, 5, 13),                                                                    // uppercase field
		headers(1, 5, 0, 1, 2, 3, 4, 12),                                                                       // connection-specific
		headers(1, 5, 0, 1, 2, 3, 4, 11),                                                                       // te gzip
		headers(1, 5, 1, 2, 3),                                                                                 // no :method
		headers(1, 5, 0, 0, 1, 2, 3),                                                                           // duplicated :method
		headers(1, 5, 9, 0, 1, 2, 3),                                                                           // :status in a request
		headers(1, 5, 0, 1, 4, 2),                                                                              // pseudo after regular
		cat(headers(1, 4, 0, 1, 2, 3, 4, 14), []byte{3, 1, 1, 1}),                                              // content-length mismatch
		cat(headers(1, 4, valid...), []byte{3, 1, 0, 1}, headers(1, 5, 0)),                                     // pseudo in trailers
		cat(headers(1, 0, valid...), []byte{2, 1, 0, 2, 6, 7, 2, 1, 4, 1, 8}),                                  // CONTINUATION
		cat(headers(1, 0x24, valid...), []byte{1}),                                                             // self-dependent HEADERS
		{7, 1, 0, 1, 16},            // self-dependent PRIORITY
		{0, 0, 0, 4, 0, 0, 0, 0, 0}, // raw DATA on stream 0
		{6, 0, 0, 0, 0, 0, 2, 2},    // ENABLE_PUSH=2
		{6, 0, 0, 0x80, 0, 0, 0, 4}, // INITIAL_WINDOW_SIZE over 2^31-1
		cat(headers(1, 4, valid...), []byte{4, 1, 0, 8}, headers(3, 4, valid...), []byte{4, 3, 0, 8}, headers(5, 4, valid...), []byte{4, 5, 0, 8}), // rapid reset
		cat(headers(1, 4, valid...), []byte{3, 1, 0, 255, 3, 1, 0, 255, 3, 1, 0, 255}),                                                             // a message over the limit
		headers(1, 5, 0, 1, 2, 3, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21),                                                                      // a large header list
		headers(1, 5, 7, 1, 2, 3), // GET
		{8, 0, 0, 1, 9, 0, 0, 0},  // PING, GOAWAY
	}
}
