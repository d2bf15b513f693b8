package h2wire

import (
	"bytes"
	"unsafe"

	"golang.org/x/net/http2/hpack"
)

// Encoder is the HPACK encoder of one connection (x/net's), which remembers
// how it encoded recent fields: a field whose encoding left the dynamic
// table as it was (a reference to a table entry, or a literal that is not
// indexed) encodes to the same bytes until the table changes, and is then
// copied rather than looked up again. x/net's encoder looks each field up
// in four maps, by name and by name and value, in the static and the
// dynamic table; a proxy re-encodes every header list it forwards, most of
// them the same fields as the RPC before.
//
// Fields that change with every request are never indexed, so that they
// neither evict the lasting entries nor change the table: grpc-timeout,
// the deadline's remaining time.
type Encoder struct {
	enc *hpack.Encoder
	out bytes.Buffer // enc's output, one field at a time
	// gen counts the changes of the dynamic table (an entry added, a size
	// change): a remembered encoding is good for the generation it was
	// made in.
	gen   uint64
	cache [encoderCacheSize]cachedField
}

// encoderCacheSize is the number of fields remembered, indexed by the
// addresses of their strings: a forwarded list's strings are the decoder's
// table entries, the same from one RPC to the next.
const encoderCacheSize = 64

type cachedField struct {
	name, value string
	sensitive   bool
	gen         uint64
	n           uint8
	b           [14]byte // the encoding
}

// NewEncoder returns an encoder with HPACK's initial 4096-byte table.
func NewEncoder() *Encoder {
	e := &Encoder{gen: 1}
	e.enc = hpack.NewEncoder(&e.out)
	return e
}

// SetMaxDynamicTableSizeLimit applies the peer's SETTINGS_HEADER_TABLE_SIZE.
func (e *Encoder) SetMaxDynamicTableSizeLimit(v uint32) {
	e.enc.SetMaxDynamicTableSizeLimit(v)
	e.gen++
}

// AppendBlock appends the header block of fields to dst.
func (e *Encoder) AppendBlock(dst []byte, fields []hpack.HeaderField) []byte {
	for _, f := range fields {
		if !f.Sensitive && neverIndexed(f.Name) {
			f.Sensitive = true
		}
		slot := &e.cache[fieldSlot(f)]
		if slot.gen == e.gen && slot.name == f.Name && slot.value == f.Value && slot.sensitive == f.Sensitive {
			dst = append(dst, slot.b[:slot.n]...)
			continue
		}
		e.out.Reset()
		_ = e.enc.WriteField(f) // writes to a bytes.Buffer: cannot fail
		b := e.out.Bytes()
		dst = append(dst, b...)
		switch {
		case b[0]&0xc0 == 0x40 || b[0]&0xe0 == 0x20:
			// A literal added to the table, or a table size update
			// before the field: every remembered index may have moved.
			e.gen++
		case len(b) <= len(slot.b):
			*slot = cachedField{name: f.Name, value: f.Value, sensitive: f.Sensitive, gen: e.gen, n: uint8(len(b))}
			copy(slot.b[:], b)
		}
	}
	return dst
}

// neverIndexed tells the fields whose value changes with every request.
func neverIndexed(name string) bool { return name == "grpc-timeout" }

func fieldSlot(f hpack.HeaderField) int {
	h := uintptr(unsafe.Pointer(unsafe.StringData(f.Name)))*31 + uintptr(unsafe.Pointer(unsafe.StringData(f.Value)))
	h ^= h >> 17
	h *= 0x9e3779b1
	return int(h>>7) % encoderCacheSize
}
