package h2wire

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// encodeSteps feeds the same blocks (and table size limits, where limit
// is not 0) to an Encoder and to x/net's encoder (told to never index what
// the Encoder never indexes), decodes the Encoder's output with x/net's
// decoder, and reports the first difference, in the fields decoded or in
// the bytes.
func encodeSteps(t testing.TB, blocks [][]hpack.HeaderField, limits []uint32) {
	t.Helper()
	ours := NewEncoder()
	var refOut bytes.Buffer
	ref := hpack.NewEncoder(&refOut)
	dec := hpack.NewDecoder(4096, nil)
	for i, fields := range blocks {
		if limits != nil && limits[i] != 0 {
			ours.SetMaxDynamicTableSizeLimit(limits[i])
			ref.SetMaxDynamicTableSizeLimit(limits[i])
		}
		got := ours.AppendBlock(nil, fields)
		refOut.Reset()
		for _, f := range fields {
			f.Sensitive = f.Sensitive || neverIndexed(f.Name)
			_ = ref.WriteField(f)
		}
		decoded, err := dec.DecodeFull(got)
		if err != nil {
			t.Fatalf("block %d: the Encoder's output does not decode: %v", i, err)
		}
		for j := range decoded {
			decoded[j].Sensitive = false
		}
		want := make([]hpack.HeaderField, len(fields))
		for j, f := range fields {
			want[j] = hpack.HeaderField{Name: f.Name, Value: f.Value}
		}
		if fmt.Sprint(decoded) != fmt.Sprint(want) {
			t.Fatalf("block %d decodes to %v, want %v", i, decoded, want)
		}
		if !bytes.Equal(got, refOut.Bytes()) {
			t.Fatalf("block %d: % x, x/net's encoder wrote % x", i, got, refOut.Bytes())
		}
	}
}

func fields(kv ...string) []hpack.HeaderField { return hf(kv...) }

func TestEncoder(t *testing.T) {
	request := fields(":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "x", "content-type", "application/grpc", "te", "trailers")
	response := fields(":status", "200", "content-type", "application/grpc", "x-backend", "b1")
	trailers := fields("grpc-status", "0")
	// The same strings block after block, as a decoder's table hands out.
	var steady [][]hpack.HeaderField
	for range 20 {
		steady = append(steady, request, response, trailers)
	}
	t.Run("steady lists", func(t *testing.T) { encodeSteps(t, steady, nil) })

	// Equal strings at other addresses, and values that change.
	var fresh [][]hpack.HeaderField
	for i := range 40 {
		fresh = append(fresh, fields(":status", strings.Clone("200"), "x-n", fmt.Sprint(i%7), "x-big", strings.Repeat("v", 1000+i)))
	}
	t.Run("fresh strings and evictions", func(t *testing.T) { encodeSteps(t, fresh, nil) })

	// Table size limits from the peer's SETTINGS in between.
	blocks := append(append([][]hpack.HeaderField{}, steady[:6]...), steady[:6]...)
	limits := make([]uint32, len(blocks))
	limits[3], limits[6], limits[9] = 0x100, 0x1000, 1
	t.Run("table size changes", func(t *testing.T) { encodeSteps(t, blocks, limits) })

	// grpc-timeout is never indexed: the rest of the table stays.
	var timed [][]hpack.HeaderField
	for i := range 50 {
		timed = append(timed, append(append([]hpack.HeaderField{}, request...), hpack.HeaderField{Name: "grpc-timeout", Value: fmt.Sprint(9999000+i, "u")}))
	}
	t.Run("grpc-timeout", func(t *testing.T) { encodeSteps(t, timed, nil) })
	e := NewEncoder()
	e.AppendBlock(nil, timed[0])
	before := e.gen
	for _, b := range timed[1:] {
		e.AppendBlock(nil, b)
	}
	if e.gen != before {
		t.Errorf("the table changed %d times over requests that differ only in grpc-timeout", e.gen-before)
	}
}

// TestEncoderRemembers checks that a list encoded before costs no
// allocation and no table lookup: every field comes from the cache.
func TestEncoderRemembers(t *testing.T) {
	e := NewEncoder()
	list := fields(":status", "200", "content-type", "application/grpc", "x-backend", "b1", "grpc-status", "0")
	buf := e.AppendBlock(nil, list)
	buf = e.AppendBlock(buf[:0], list) // now all references to the table
	want := string(buf)
	allocs := testing.AllocsPerRun(100, func() { buf = e.AppendBlock(buf[:0], list) })
	if allocs != 0 {
		t.Errorf("%v allocations per block, want 0", allocs)
	}
	if string(buf) != want {
		t.Errorf("block % x, want % x", buf, want)
	}
	hits := 0
	for _, f := range list {
		slot := &e.cache[fieldSlot(f)]
		if slot.gen == e.gen && slot.name == f.Name && slot.value == f.Value {
			hits++
		}
	}
	if hits < len(list)-1 { // two fields may share a slot
		t.Errorf("%d of %d fields remembered", hits, len(list))
	}
}

// FuzzEncoder encodes block sequences made of the input and holds the
// result to x/net's encoder and decoder.
func FuzzEncoder(f *testing.F) {
	f.Add([]byte("\x00\x01\x02\x00\x01\x02\x03\x03\x04"), uint16(0))
	f.Add([]byte("\x05\x05\x05\x06\x00\x06"), uint16(64))
	names := []string{":status", "content-type", "x-a", "grpc-timeout", "x-b", "grpc-message"}
	f.Fuzz(func(t *testing.T, in []byte, limit uint16) {
		var blocks [][]hpack.HeaderField
		var limits []uint32
		var cur []hpack.HeaderField
		for i, c := range in {
			if c == 0xff || len(cur) == 8 {
				blocks, cur = append(blocks, cur), nil
				l := uint32(0)
				if i%5 == 0 {
					l = uint32(limit) + 1
				}
				limits = append(limits, l)
				continue
			}
			name := names[int(c)%len(names)]
			value := strings.Repeat("v", int(c>>3))
			cur = append(cur, hpack.HeaderField{Name: name, Value: value})
		}
		encodeSteps(t, blocks, limits)
	})
}

// BenchmarkEncoder encodes a gRPC response's headers and trailers as a
// proxy forwards them, with the Encoder and with x/net's encoder alone.
func BenchmarkEncoder(b *testing.B) {
	headers := fields(":status", "200", "content-type", "application/grpc", "x-backend", "b1")
	trailers := fields("grpc-status", "0", "grpc-message", "")
	b.Run("Encoder", func(b *testing.B) {
		e := NewEncoder()
		var buf []byte
		b.ReportAllocs()
		for range b.N {
			buf = e.AppendBlock(buf[:0], headers)
			buf = e.AppendBlock(buf[:0], trailers)
		}
	})
	b.Run("x/net", func(b *testing.B) {
		var buf bytes.Buffer
		e := hpack.NewEncoder(&buf)
		b.ReportAllocs()
		for range b.N {
			buf.Reset()
			for _, f := range headers {
				_ = e.WriteField(f)
			}
			buf.Reset()
			for _, f := range trailers {
				_ = e.WriteField(f)
			}
		}
	})
}

// BenchmarkHeaderReader decodes a stream of request header blocks.
func BenchmarkHeaderReader(b *testing.B) {
	var wire bytes.Buffer
	fr := http2.NewFramer(&wire, nil)
	var blk bytes.Buffer
	enc := hpack.NewEncoder(&blk)
	for id := uint32(1); id < 2000; id += 2 {
		blk.Reset()
		for _, f := range fields(":method", "POST", ":scheme", "http", ":path", "/grpc.testing.TestService/UnaryCall", ":authority", "127.0.0.1:19021", "content-type", "application/grpc", "user-agent", "grpc-go/1.85.0", "te", "trailers") {
			_ = enc.WriteField(f)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk.Bytes(), EndHeaders: true})
	}
	data := wire.Bytes()
	b.Run("HeaderReader", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(data)
		hr := NewHeaderReader(http2.NewFramer(nil, r), 4096, 1<<20)
		for range b.N {
			if _, err := hr.ReadFrame(); err != nil {
				r.Reset(data)
				hr = NewHeaderReader(http2.NewFramer(nil, r), 4096, 1<<20)
			}
		}
	})
	b.Run("x/net", func(b *testing.B) {
		b.ReportAllocs()
		r := bytes.NewReader(data)
		newFr := func() *http2.Framer {
			fr := http2.NewFramer(nil, r)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			return fr
		}
		fr := newFr()
		for range b.N {
			if _, err := fr.ReadFrame(); err != nil {
				r.Reset(data)
				fr = newFr()
			}
		}
	})
}
