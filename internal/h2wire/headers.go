package h2wire

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HeaderReader reads a connection's frames and decodes the header block
// of each HEADERS frame (with its CONTINUATION frames) as x/net's Framer
// does with ReadMetaHeaders set, by the same rules and with the same
// errors, but into storage it reuses: the *http2.MetaHeadersFrame it
// returns, and its Fields slice, are valid until the next ReadFrame. The
// fields' strings are the decoder's and stay valid; a caller that keeps
// the list copies the slice.
//
// x/net's reader allocates, for every header block, the frame, the field
// list as it grows, and the closure that collects the fields with each
// variable it captures: about ten allocations per block, three blocks per
// RPC (request headers, response headers, trailers) on each side of a
// proxy.
type HeaderReader struct {
	fr  *http2.Framer
	dec *hpack.Decoder
	mh  http2.MetaHeadersFrame
	max uint32 // SETTINGS_MAX_HEADER_LIST_SIZE

	// valid holds strings already found valid (names at even, values at
	// odd slots, by the field's position in its block): a field the
	// decoder serves from its table has the same strings as the block
	// before, and is not checked again byte by byte.
	valid [2 * validFields]string

	// State of the block being decoded.
	headersLeft, trailersLeft uint32
	sawRegular                bool
	invalid                   error
	errDetail                 error
}

// NewHeaderReader reads fr's frames, decoding header blocks with a fresh
// HPACK decoder (a dynamic table of tableSize bytes) and refusing header
// lists over maxHeaderListSize bytes as x/net's Framer does: the fields
// past the limit are dropped and the frame is marked Truncated. fr must
// not have ReadMetaHeaders set.
func NewHeaderReader(fr *http2.Framer, tableSize, maxHeaderListSize uint32) *HeaderReader {
	r := &HeaderReader{fr: fr, max: maxHeaderListSize}
	fr.MaxHeaderListSize = maxHeaderListSize
	r.dec = hpack.NewDecoder(tableSize, r.emit)
	r.dec.SetMaxStringLength(int(maxHeaderListSize))
	return r
}

// ErrorDetail is the reason of the last stream error ReadFrame returned
// for a header block (an invalid field, a misplaced pseudo-header field),
// or the Framer's own detail.
func (r *HeaderReader) ErrorDetail() error {
	if r.errDetail != nil {
		return r.errDetail
	}
	return r.fr.ErrorDetail()
}

// ReadFrame reads the next frame. A HEADERS frame comes back, with the
// CONTINUATION frames that complete it, as a *http2.MetaHeadersFrame
// valid until the next call.
func (r *HeaderReader) ReadFrame() (http2.Frame, error) {
	r.errDetail = nil
	f, err := r.fr.ReadFrame()
	if err != nil {
		return f, err
	}
	hf, ok := f.(*http2.HeadersFrame)
	if !ok {
		return f, nil
	}
	return r.readBlock(hf)
}

// readBlock decodes hf's header block, reading its CONTINUATION frames.
// It follows x/net's Framer.readMetaFrame (v0.60.0) step by step.
func (r *HeaderReader) readBlock(hf *http2.HeadersFrame) (http2.Frame, error) {
	mh := &r.mh
	clear(mh.Fields) // let the previous block's strings go
	*mh = http2.MetaHeadersFrame{HeadersFrame: hf, Fields: mh.Fields[:0]}
	r.headersLeft, r.trailersLeft = r.max, r.max
	r.sawRegular, r.invalid = false, nil
	r.dec.SetEmitEnabled(true)

	frag := hf.HeaderBlockFragment()
	ended := hf.HeadersEnded()
	for {
		// A fragment far over the room left is not decoded only to be
		// dropped: the connection ends.
		if int64(len(frag)) > 2*int64(r.headersLeft+r.trailersLeft) {
			return mh, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		// Nor is a CONTINUATION after an invalid field decoded: the size
		// of what follows is no longer tracked.
		if r.invalid != nil {
			return mh, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return mh, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf := f.(*http2.ContinuationFrame) // the Framer checks the order
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return mh, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid != nil {
		r.errDetail = r.invalid
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	if err := checkPseudos(mh.PseudoFields()); err != nil {
		r.errDetail = err
		return nil, http2.StreamError{StreamID: hf.StreamID, Code: http2.ErrCodeProtocol, Cause: err}
	}
	return mh, nil
}

// emit collects one decoded field, as x/net's readMetaFrame does: the
// first invalid field stops the decoding (the block is a stream error),
// and so does the first field over the size limit (the frame is
// Truncated).
func (r *HeaderReader) emit(hf hpack.HeaderField) {
	i := len(r.mh.Fields)
	nameOK, valueOK := false, false
	if i < validFields {
		nameOK, valueOK = same(r.valid[2*i], hf.Name), same(r.valid[2*i+1], hf.Value)
	}
	if !valueOK && !httpguts.ValidHeaderFieldValue(hf.Value) {
		// The value is not in the error: it may be sensitive.
		r.invalid = headerFieldError("value", hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if r.sawRegular {
			r.invalid = errPseudoAfterRegular
		}
	} else {
		r.sawRegular = true
		if !nameOK && !validFieldName(hf.Name) {
			r.invalid = headerFieldError("name", hf.Name)
		}
	}
	if r.invalid == nil && i < validFields {
		r.valid[2*i], r.valid[2*i+1] = hf.Name, hf.Value
	}
	if r.invalid != nil {
		r.dec.SetEmitEnabled(false)
		return
	}
	left, size := &r.headersLeft, hf.Size()
	if hf.Name == "trailer" {
		// Counted as x/net counts it: as the fields it announces.
		left = &r.trailersLeft
		n := uint32(strings.Count(hf.Value, ",") + 1)
		size = uint32(len(hf.Value)) - n + 1 + n*hpack.HeaderField{}.Size()
	}
	if size > *left {
		r.dec.SetEmitEnabled(false)
		r.mh.Truncated = true
		r.headersLeft, r.trailersLeft = 0, 0
		return
	}
	*left -= size
	r.mh.Fields = append(r.mh.Fields, hf)
}

// validFields is how many fields of a block valid remembers.
const validFields = 16

// same tells whether a and b are the same non-empty string: the same
// bytes at the same address (a string's bytes never change).
func same(a, b string) bool {
	return len(a) > 0 && len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

var errPseudoAfterRegular = errors.New("pseudo header field after regular")

func headerFieldError(what, name string) error {
	return fmt.Errorf("invalid header field %s for %q", what, name)
}

// validFieldName is a lowercase token (RFC 9113 8.2.1).
func validFieldName(v string) bool {
	if v == "" {
		return false
	}
	for _, c := range v {
		if !httpguts.IsTokenRune(c) || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// checkPseudos refuses unknown and duplicated pseudo-header fields, and a
// mix of request and response ones.
func checkPseudos(pf []hpack.HeaderField) error {
	var request, response bool
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return fmt.Errorf("invalid pseudo-header %q", hf.Name)
		}
		for _, prev := range pf[:i] {
			if hf.Name == prev.Name {
				return fmt.Errorf("duplicate pseudo-header %q", hf.Name)
			}
		}
	}
	if request && response {
		return errors.New("mix of request and response pseudo headers")
	}
	return nil
}
