package probeconn

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/h2wire"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// rawServer is an HTTP/2 server that answers the first request of each
// connection with a scripted sequence of frames: answers no grpc-go
// server would give, which backends (or what stands in front of them)
// still can.
func rawServer(t *testing.T, script func(fr *http2.Framer, headers func(endStream bool, kv ...string))) string {
	t.Helper()
	return rawServerWith(t, nil, nil, script)
}

// rawServerWith is rawServer whose SETTINGS preface is preface, and which
// sends the code of every GOAWAY the client sends it to goAway (if not
// nil; a send that would block is dropped).
func rawServerWith(t *testing.T, preface []http2.Setting, goAway chan<- http2.ErrCode, script func(fr *http2.Framer, headers func(endStream bool, kv ...string))) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() { serveRaw(nc, preface, goAway, script) })
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
	return ln.Addr().String()
}

func serveRaw(nc net.Conn, preface []http2.Setting, goAway chan<- http2.ErrCode, script func(fr *http2.Framer, headers func(endStream bool, kv ...string))) {
	pfx := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(nc, pfx); err != nil {
		return
	}
	fr := http2.NewFramer(nc, nc)
	if err := fr.WriteSettings(preface...); err != nil {
		return
	}
	// read returns the client's next frame, reporting a GOAWAY.
	read := func() (http2.Frame, error) {
		f, err := fr.ReadFrame()
		if g, ok := f.(*http2.GoAwayFrame); ok && err == nil && goAway != nil {
			select {
			case goAway <- g.ErrCode:
			default:
			}
		}
		return f, err
	}
	for {
		f, err := read()
		if err != nil {
			return
		}
		if h, ok := f.(*http2.HeadersFrame); ok {
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			headers := func(endStream bool, kv ...string) {
				buf.Reset()
				for i := 0; i+1 < len(kv); i += 2 {
					_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
				}
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.StreamID, BlockFragment: buf.Bytes(), EndStream: endStream, EndHeaders: true})
			}
			script(fr, headers)
			break
		}
	}
	for {
		if _, err := read(); err != nil {
			break
		}
	}
	_, _ = io.Copy(io.Discard, nc)
}

// message frames a HealthCheckResponse{status: SERVING} (field 1 = 1)
// with the given compressed flag.
func message(flag byte) []byte {
	body := []byte{0x08, 0x01}
	b := make([]byte, 5+len(body))
	b[0] = flag
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)))
	copy(b[5:], body)
	return b
}

func TestUnusualAnswers(t *testing.T) {
	ok := []string{":status", "200", "content-type", "application/grpc"}
	tests := []struct {
		name     string
		script   func(fr *http2.Framer, headers func(bool, ...string))
		wantCode codes.Code
		wantMsg  string
		wantKind Kind // 0: no error
	}{
		{"served", func(fr *http2.Framer, headers func(bool, ...string)) {
			headers(false, ok...)
			_ = fr.WriteData(1, false, message(0))
			headers(true, "grpc-status", "0")
		}, codes.OK, "", 0},
		{"http 404", func(_ *http2.Framer, headers func(bool, ...string)) {
			headers(true, ":status", "404")
		}, codes.Unimplemented, "unexpected HTTP status code received from server: 404 (Not Found)", KindNotGRPC},
		{"http 503 with a body", func(fr *http2.Framer, headers func(bool, ...string)) {
			headers(false, ":status", "503", "content-type", "text/plain")
			_ = fr.WriteData(1, true, []byte("overloaded"))
		}, codes.Unavailable, "unexpected HTTP status code", KindNotGRPC},
		{"no :status", func(_ *http2.Framer, headers func(bool, ...string)) {
			headers(true, "content-type", "application/grpc")
		}, codes.Internal, "malformed header: missing HTTP status", KindNotGRPC},
		{"html", func(_ *http2.Framer, headers func(bool, ...string)) {
			headers(true, ":status", "200", "content-type", "text/html")
		}, codes.Unknown, "received unexpected content-type", KindNotGRPC},
		{"trailers-only NOT_FOUND", func(_ *http2.Framer, headers func(bool, ...string)) {
			headers(true, append(ok, "grpc-status", "5", "grpc-message", "no%20such%20service")...)
		}, codes.NotFound, "no such service", KindAnswered},
		{"malformed grpc-status", func(_ *http2.Framer, headers func(bool, ...string)) {
			headers(true, append(ok, "grpc-status", "five")...)
		}, codes.Internal, "malformed grpc-status", KindNotGRPC},
		{"no grpc-status", func(fr *http2.Framer, headers func(bool, ...string)) {
			headers(false, ok...)
			_ = fr.WriteData(1, false, message(0))
			headers(true, "x-other", "1")
		}, codes.Unknown, "without a grpc-status", KindMalformed},
		{"compressed without asking", func(fr *http2.Framer, headers func(bool, ...string)) {
			headers(false, ok...)
			_ = fr.WriteData(1, false, message(1))
		}, codes.Internal, "compressed message", KindMalformed},
		{"END_STREAM on DATA", func(fr *http2.Framer, headers func(bool, ...string)) {
			headers(false, ok...)
			_ = fr.WriteData(1, true, nil)
		}, codes.Internal, "without sending trailers", KindMalformed},
		{"DATA before HEADERS", func(fr *http2.Framer, _ func(bool, ...string)) {
			_ = fr.WriteData(1, false, message(0))
		}, codes.Internal, "malformed header", KindNotGRPC},
		{"RST_STREAM REFUSED_STREAM", func(fr *http2.Framer, _ func(bool, ...string)) {
			_ = fr.WriteRSTStream(1, http2.ErrCodeRefusedStream)
		}, codes.Unavailable, "stream terminated by RST_STREAM with error code: REFUSED_STREAM", KindReset},
		{"GOAWAY with an error", func(fr *http2.Framer, _ func(bool, ...string)) {
			_ = fr.WriteGoAway(0, http2.ErrCodeEnhanceYourCalm, []byte("too_many_pings"))
		}, codes.Unavailable, "received goaway: code: ENHANCE_YOUR_CALM", KindGoAway},
		{"PUSH_PROMISE", func(fr *http2.Framer, _ func(bool, ...string)) {
			_ = fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, codes.Unavailable, "PUSH_PROMISE", KindBroken},
		{"broken HPACK", func(fr *http2.Framer, _ func(bool, ...string)) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, codes.Unavailable, "connection error", KindBroken},
		{"a frame beyond 16 KiB", func(fr *http2.Framer, headers func(bool, ...string)) {
			headers(false, ok...)
			_ = fr.WriteData(1, false, make([]byte, 20000))
		}, codes.Unavailable, "frame too large", KindBroken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConn(t, rawServer(t, tt.script), Options{})
			_, err := check(t.Context(), c, "", 5*time.Second)
			st := status.Convert(err)
			if st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantMsg) {
				t.Errorf("Check = %v; want code %v with %q", err, tt.wantCode, tt.wantMsg)
			}
			var pe *Error
			switch {
			case tt.wantKind == 0 && err != nil:
				t.Errorf("Check = %v, want no error", err)
			case tt.wantKind != 0 && !errors.As(err, &pe):
				t.Errorf("Check = %T %v, want an *Error of kind %v", err, err, tt.wantKind)
			case tt.wantKind != 0 && pe.Kind != tt.wantKind:
				t.Errorf("Check failed with kind %v (%v), want %v", pe.Kind, err, tt.wantKind)
			}
		})
	}
}

// TestBadSettings: a backend whose SETTINGS break RFC 9113 6.5.2, in its
// preface or during a call, fails the probe as a broken transport
// (UNAVAILABLE, wrapping the *h2wire.ConnError that names the setting)
// and is sent a GOAWAY with the code the RFC gives the fault; nothing of
// the frame is applied, and nothing panics. Valid extremes still serve.
func TestBadSettings(t *testing.T) {
	ok := []string{":status", "200", "content-type", "application/grpc"}
	serve := func(fr *http2.Framer, headers func(bool, ...string)) {
		headers(false, ok...)
		_ = fr.WriteData(1, false, message(0))
		headers(true, "grpc-status", "0")
	}
	type setting = http2.Setting
	tests := []struct {
		name     string
		settings []setting
		// grow, if not zero, is a WINDOW_UPDATE on the call's stream sent
		// before a SETTINGS during the call.
		grow uint32
		want http2.ErrCode // 0: a valid frame, the call is served
		// named is the setting the error names.
		named http2.SettingID
	}{
		{"INITIAL_WINDOW_SIZE 2^31", []setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 31}}, 0, http2.ErrCodeFlowControl, http2.SettingInitialWindowSize},
		{"INITIAL_WINDOW_SIZE 2^32-1", []setting{{ID: http2.SettingInitialWindowSize, Val: 1<<32 - 1}}, 0, http2.ErrCodeFlowControl, http2.SettingInitialWindowSize},
		{"MAX_FRAME_SIZE 0", []setting{{ID: http2.SettingMaxFrameSize, Val: 0}}, 0, http2.ErrCodeProtocol, http2.SettingMaxFrameSize},
		{"MAX_FRAME_SIZE 16383", []setting{{ID: http2.SettingMaxFrameSize, Val: 16383}}, 0, http2.ErrCodeProtocol, http2.SettingMaxFrameSize},
		{"MAX_FRAME_SIZE 2^24", []setting{{ID: http2.SettingMaxFrameSize, Val: 1 << 24}}, 0, http2.ErrCodeProtocol, http2.SettingMaxFrameSize},
		{"ENABLE_PUSH 1 from a server", []setting{{ID: http2.SettingEnablePush, Val: 1}}, 0, http2.ErrCodeProtocol, http2.SettingEnablePush},
		{"ENABLE_PUSH 2", []setting{{ID: http2.SettingEnablePush, Val: 2}}, 0, http2.ErrCodeProtocol, http2.SettingEnablePush},
		{"valid then invalid", []setting{{ID: http2.SettingInitialWindowSize, Val: 1 << 20}, {ID: http2.SettingMaxFrameSize, Val: 1}}, 0, http2.ErrCodeProtocol, http2.SettingMaxFrameSize},
		{"a stream window over 2^31-1", []setting{{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}}, 1<<31 - 1 - 65535, http2.ErrCodeFlowControl, http2.SettingInitialWindowSize},
		{"valid extremes", []setting{
			{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1},
			{ID: http2.SettingMaxFrameSize, Val: 1<<24 - 1},
			{ID: http2.SettingEnablePush, Val: 0},
			{ID: http2.SettingHeaderTableSize, Val: 1<<32 - 1},
			{ID: http2.SettingMaxHeaderListSize, Val: 0},
			{ID: http2.SettingMaxConcurrentStreams, Val: 1<<32 - 1},
			{ID: 0x99, Val: 1<<32 - 1}, // unknown: ignored (RFC 9113 6.5.2)
		}, 0, 0, 0},
		{"the smallest MAX_FRAME_SIZE", []setting{{ID: http2.SettingMaxFrameSize, Val: 16384}}, 0, 0, 0},
	}
	for _, tt := range tests {
		for _, when := range []string{"preface", "during the call"} {
			if tt.grow != 0 && when == "preface" {
				// The window a SETTINGS would overflow is a stream's.
				continue
			}
			t.Run(tt.name+"/"+when, func(t *testing.T) {
				var preface []setting
				script := serve
				switch {
				case when == "preface":
					preface = tt.settings
					if tt.want != 0 {
						script = func(*http2.Framer, func(bool, ...string)) {}
					}
				case tt.want != 0:
					script = func(fr *http2.Framer, _ func(bool, ...string)) {
						if tt.grow != 0 {
							_ = fr.WriteWindowUpdate(1, tt.grow)
						}
						_ = fr.WriteSettings(tt.settings...)
					}
				default:
					script = func(fr *http2.Framer, headers func(bool, ...string)) {
						_ = fr.WriteSettings(tt.settings...)
						serve(fr, headers)
					}
				}
				goAway := make(chan http2.ErrCode, 4)
				c := newConn(t, rawServerWith(t, preface, goAway, script), Options{})
				got, err := check(t.Context(), c, "", 5*time.Second)
				if tt.want == 0 {
					if err != nil || got != healthpb.HealthCheckResponse_SERVING {
						t.Fatalf("Check = %v, %v; want SERVING", got, err)
					}
					return
				}
				var pe *Error
				if !errors.As(err, &pe) || pe.Kind != KindBroken || status.Code(err) != codes.Unavailable {
					t.Fatalf("Check = %T %v; want an *Error of kind %v, UNAVAILABLE", err, err, KindBroken)
				}
				var ce *h2wire.ConnError
				if !errors.As(err, &ce) || ce.Code != tt.want {
					t.Fatalf("Check = %v; want it to wrap an *h2wire.ConnError %v", err, tt.want)
				}
				// The setting's name as x/net spells it, not vigil's words.
				if name := tt.named.String(); !strings.Contains(err.Error(), name) {
					t.Errorf("Check = %v; want the error to name %s", err, name)
				}
				select {
				case code := <-goAway:
					if code != tt.want {
						t.Errorf("GOAWAY %v sent to the backend, want %v", code, tt.want)
					}
				case <-time.After(5 * time.Second):
					t.Errorf("no GOAWAY sent to the backend, want %v", tt.want)
				}
			})
		}
	}
}
