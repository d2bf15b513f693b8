package h2wire

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// readBoth reads the frames in wire with x/net's Framer (ReadMetaHeaders
// set) and with a HeaderReader, and describes what each read, frame by
// frame, until both stop with an error.
func readBoth(t testing.TB, wire []byte, maxList uint32) (xnet, ours []string) {
	t.Helper()
	ref := http2.NewFramer(nil, bytes.NewReader(wire))
	ref.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	ref.MaxHeaderListSize = maxList
	hr := NewHeaderReader(http2.NewFramer(nil, bytes.NewReader(wire)), 4096, maxList)
	return describeFrames(ref.ReadFrame, ref.ErrorDetail), describeFrames(hr.ReadFrame, hr.ErrorDetail)
}

func describeFrames(read func() (http2.Frame, error), detail func() error) []string {
	var out []string
	for range 64 {
		f, err := read()
		if err != nil {
			var se http2.StreamError
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &se):
				out = append(out, fmt.Sprintf("stream error %d %v (detail: %v)", se.StreamID, se.Code, detail() != nil))
				continue // a stream error leaves the connection usable
			case errors.As(err, &ce):
				out = append(out, fmt.Sprintf("connection error %v", http2.ErrCode(ce)))
			default:
				out = append(out, "error "+err.Error())
			}
			return out
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			out = append(out, fmt.Sprintf("headers stream=%d end=%v truncated=%v fields=%q", f.StreamID, f.StreamEnded(), f.Truncated, f.Fields))
		default:
			out = append(out, fmt.Sprintf("%v stream=%d", f.Header().Type, f.Header().StreamID))
		}
	}
	return out
}

// block encodes fields with a fresh encoder.
func block(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return buf.Bytes()
}

// TestHeaderReaderMatchesXNet holds HeaderReader to x/net's own decoding
// of header blocks (the rules the grpc listener passed h2spec with): the
// same fields, the same truncation, the same errors.
func TestHeaderReaderMatchesXNet(t *testing.T) {
	request := []string{":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "x", "content-type", "application/grpc", "te", "trailers"}
	big := strings.Repeat("v", 3000)
	tests := []struct {
		name  string
		write func(fr *http2.Framer)
	}{
		{"request, response, trailers", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(request...), EndHeaders: true})
			fr.WriteData(1, true, []byte("x"))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":status", "200", "content-type", "application/grpc"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("grpc-status", "0", "grpc-message", ""), EndHeaders: true, EndStream: true})
		}},
		{"continuations", func(fr *http2.Framer) {
			b := block(append(request, "x-big", big)...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:10], EndStream: true})
			fr.WriteContinuation(1, false, b[10:20])
			fr.WriteContinuation(1, true, b[20:])
			fr.WritePing(false, [8]byte{1})
		}},
		{"header list over the limit", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(append(request, "x-a", big, "x-b", big)...), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(request...), EndHeaders: true})
		}},
		{"trailer field counted as its fields", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(append(request, "trailer", strings.Repeat("a,", 200))...), EndHeaders: true})
		}},
		{"fragment far over the limit", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(append(request, "x-a", big+big+big)...), EndHeaders: true})
		}},
		{"uppercase name", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(append(request, "X-Up", "1")...), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(request...), EndHeaders: true})
		}},
		{"invalid value", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(append(request, "x-a", "a\x00b")...), EndHeaders: true})
		}},
		{"invalid field then CONTINUATION", func(fr *http2.Framer) {
			b := block(append([]string{"Bad", "1"}, request...)...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:6]})
			fr.WriteContinuation(1, true, b[6:])
		}},
		{"pseudo after regular", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block("x-a", "1", ":method", "POST"), EndHeaders: true})
		}},
		{"unknown, duplicated and mixed pseudo-header fields", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(":foo", "1"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":path", "/", ":path", "/"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(":path", "/", ":status", "200"), EndHeaders: true})
		}},
		{"broken HPACK", func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0x7f}, EndHeaders: true})
		}},
		{"truncated HPACK", func(fr *http2.Framer) {
			b := block(request...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:len(b)-2], EndHeaders: true})
		}},
		{"frame between HEADERS and CONTINUATION", func(fr *http2.Framer) {
			b := block(request...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:5]})
			fr.WritePing(false, [8]byte{})
		}},
		{"CONTINUATION on another stream", func(fr *http2.Framer) {
			b := block(request...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:5]})
			fr.WriteContinuation(3, true, b[5:])
		}},
		{"stray CONTINUATION", func(fr *http2.Framer) {
			fr.WriteContinuation(1, true, block(request...))
		}},
		{"dynamic table across blocks", func(fr *http2.Framer) {
			var buf bytes.Buffer
			enc := hpack.NewEncoder(&buf)
			for id := uint32(1); id < 8; id += 2 {
				buf.Reset()
				for i := 0; i < len(request); i += 2 {
					_ = enc.WriteField(hpack.HeaderField{Name: request[i], Value: request[i+1]})
				}
				_ = enc.WriteField(hpack.HeaderField{Name: "grpc-timeout", Value: fmt.Sprint(id, "m")})
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true})
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var wire bytes.Buffer
			tc.write(http2.NewFramer(&wire, nil))
			xnet, ours := readBoth(t, wire.Bytes(), 4096)
			if !reflect.DeepEqual(xnet, ours) {
				t.Errorf("x/net read:\n  %s\nHeaderReader read:\n  %s", strings.Join(xnet, "\n  "), strings.Join(ours, "\n  "))
			}
		})
	}
}

// TestHeaderReaderReuse checks that a steady stream of header blocks costs
// the reader no allocation beyond x/net's frame header struct, and that a
// list taken from one frame survives the next as long as it is copied.
func TestHeaderReaderReuse(t *testing.T) {
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	const n = 200
	for id := uint32(1); id < 2*n+2; id += 2 {
		buf.Reset()
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/a.B/C"}, {":authority", "x"}, {"content-type", "application/grpc"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true})
	}
	hr := NewHeaderReader(http2.NewFramer(nil, bytes.NewReader(wire.Bytes())), 4096, 1<<20)
	f, err := hr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	kept := append([]hpack.HeaderField(nil), f.(*http2.MetaHeadersFrame).Fields...)
	allocs := testing.AllocsPerRun(n-2, func() {
		if _, err := hr.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("%.1f allocations per header block, want at most 1 (x/net's HeadersFrame)", allocs)
	}
	if kept[2].Value != "/a.B/C" || len(kept) != 5 {
		t.Errorf("copied list changed: %q", kept)
	}
}

// FuzzHeaderReader holds HeaderReader to x/net's decoding on arbitrary
// frame streams.
func FuzzHeaderReader(f *testing.F) {
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	b := block(":method", "POST", ":path", "/x", "x-a", "b")
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:4]})
	fr.WriteContinuation(1, true, b[4:])
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":status", "200"), EndHeaders: true, EndStream: true, PadLength: 3})
	f.Add(wire.Bytes())
	f.Fuzz(func(t *testing.T, wire []byte) {
		xnet, ours := readBoth(t, wire, 256)
		if !reflect.DeepEqual(xnet, ours) {
			t.Errorf("x/net read:\n  %s\nHeaderReader read:\n  %s", strings.Join(xnet, "\n  "), strings.Join(ours, "\n  "))
		}
	})
}

// TestServerPrefaceTLS: a server's first bytes that are a TLS record (an
// alert, a ServerHello) are told apart from a bad HTTP/2 preface.
func TestServerPrefaceTLS(t *testing.T) {
	for _, tt := range []struct {
		hdr []byte
		tls bool
	}{
		{[]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46, 0, 0}, true}, // alert
		{[]byte{0x16, 0x03, 0x01, 0x00, 0x7a, 0x02, 0, 0, 0x76}, true}, // ServerHello
		{[]byte{0, 0, 0, 4, 0, 0, 0, 0, 0}, false},                     // SETTINGS
		{[]byte("HTTP/1.1 "), false},
		{[]byte{0x16, 0x02, 0x01, 0, 0, 0, 0, 0, 0}, false},
	} {
		if got := IsTLSRecord(tt.hdr); got != tt.tls {
			t.Errorf("IsTLSRecord(%x) = %v", tt.hdr, got)
		}
		err := CheckServerPreface(tt.hdr, 16384)
		if got := errors.Is(err, ErrTLSServer); got != tt.tls {
			t.Errorf("CheckServerPreface(%x) = %v", tt.hdr, err)
		}
	}
}
