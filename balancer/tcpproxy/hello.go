package tcpproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Bounds of reading a TLS ClientHello before routing by SNI.
const (
	// MaxHelloSize bounds the ClientHello's handshake message. Browsers'
	// are under 2 KiB, post-quantum key shares included; 16 KiB is one
	// full TLS record.
	MaxHelloSize = 16 << 10
	// DefaultHelloTimeout is how long a client gets to send its
	// ClientHello.
	DefaultHelloTimeout = 5 * time.Second
)

// Errors of reading a ClientHello. A client that sends something other
// than TLS, or nothing within the timeout, is not one of them: it goes to
// the listener's cluster, as a client without SNI does.
var (
	// ErrHelloTooLarge: the ClientHello is over MaxHelloSize.
	ErrHelloTooLarge = errors.New("TLS ClientHello over the size bound")
	// ErrBadHello: the bytes start as TLS but are no valid ClientHello.
	ErrBadHello = errors.New("malformed TLS ClientHello")
)

// helloError is a ClientHello that was cut (the connection ended or its
// time ran out part way).
type helloError struct{ err error }

func (e helloError) Error() string { return "reading TLS ClientHello: " + e.err.Error() }
func (e helloError) Unwrap() error { return e.err }

const (
	recordHeaderLen   = 5
	recordTypeHS      = 22 // handshake
	maxRecordLen      = 1<<14 + 2048
	handshakeHello    = 1 // ClientHello
	extServerName     = 0
	serverNameHost    = 0
	maxServerNameSize = 255
)

// readHello reads what c sends until it holds a whole ClientHello, for at
// most timeout, and returns every byte read (to be forwarded as it came)
// and the hello's server name ("" for none). tls is false, with err nil,
// when the first bytes are not a TLS handshake record or nothing came in
// time: the caller treats the connection as one without SNI.
func readHello(c net.Conn, timeout time.Duration) (data []byte, sni string, tls bool, err error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 2048)
	for {
		sni, need, perr := parseHello(buf)
		switch {
		case perr == errNotTLS:
			return buf, "", false, nil
		case perr != nil:
			return buf, "", true, perr
		case need == 0:
			return buf, sni, true, nil
		}
		if cap(buf)-len(buf) < need {
			grown := make([]byte, len(buf), len(buf)+max(need, 4096))
			copy(grown, buf)
			buf = grown
		}
		n, rerr := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr != nil && n == 0 {
			if len(buf) == 0 && errors.Is(rerr, os.ErrDeadlineExceeded) {
				// A client that waits for the server to speak first.
				return buf, "", false, nil
			}
			return buf, "", len(buf) > 0, helloError{rerr}
		}
	}
}

var errNotTLS = errors.New("not TLS")

// parseHello parses the TLS records at the start of b. It returns the
// ClientHello's server name once b holds the whole hello (need 0), or how
// many more bytes at least it needs; errNotTLS when b does not start as a
// handshake record, ErrHelloTooLarge or ErrBadHello.
func parseHello(b []byte) (sni string, need int, err error) {
	// The handshake message may span several records: gather their
	// payloads.
	var msg []byte
	var scratch [MaxHelloSize + 4]byte
	msg = scratch[:0]
	for off := 0; ; {
		if len(b)-off < recordHeaderLen {
			if off == 0 && len(b) > 0 && b[0] != recordTypeHS {
				return "", 0, errNotTLS
			}
			if off == 0 && len(b) > 1 && b[1] != 3 {
				return "", 0, errNotTLS
			}
			return "", recordHeaderLen - (len(b) - off), nil
		}
		h := b[off : off+recordHeaderLen]
		if h[0] != recordTypeHS || h[1] != 3 {
			if off == 0 {
				return "", 0, errNotTLS
			}
			return "", 0, fmt.Errorf("%w: a record of type %d inside the hello", ErrBadHello, h[0])
		}
		rlen := int(binary.BigEndian.Uint16(h[3:5]))
		if rlen == 0 || rlen > maxRecordLen {
			return "", 0, fmt.Errorf("%w: a record of %d bytes", ErrBadHello, rlen)
		}
		off += recordHeaderLen
		avail := min(rlen, len(b)-off)
		if len(msg)+avail > cap(msg) {
			return "", 0, ErrHelloTooLarge
		}
		msg = append(msg, b[off:off+avail]...)
		if len(msg) >= 4 {
			if msg[0] != handshakeHello {
				return "", 0, fmt.Errorf("%w: handshake message %d first", ErrBadHello, msg[0])
			}
			mlen := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if mlen > MaxHelloSize {
				return "", 0, ErrHelloTooLarge
			}
			if len(msg) >= 4+mlen {
				sni, err := helloServerName(msg[4 : 4+mlen])
				return sni, 0, err
			}
			if avail < rlen {
				return "", min(rlen-avail, 4+mlen-len(msg)), nil
			}
		} else if avail < rlen {
			return "", rlen - avail, nil
		}
		off += rlen
	}
}

// helloServerName returns the host_name of a ClientHello body's
// server_name extension (RFC 6066 3), "" when it has none.
func helloServerName(h []byte) (string, error) {
	bad := func(what string) (string, error) { return "", fmt.Errorf("%w: %s", ErrBadHello, what) }
	r := reader(h)
	if !r.skip(2 + 32) { // legacy_version, random
		return bad("short")
	}
	if !r.skipVec(1) || !r.skipVec(2) || !r.skipVec(1) { // session id, cipher suites, compression
		return bad("short")
	}
	if len(r) == 0 {
		return "", nil // no extensions (TLS 1.2 allows it)
	}
	exts, ok := r.vec(2)
	if !ok || len(r) != 0 {
		return bad("extensions")
	}
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		body, ok2 := exts.vec(2)
		if !ok1 || !ok2 {
			return bad("an extension")
		}
		if typ != extServerName {
			continue
		}
		list, ok := body.vec(2)
		if !ok || len(body) != 0 {
			return bad("server_name")
		}
		for len(list) > 0 {
			nt, ok1 := list.u8()
			name, ok2 := list.vec(2)
			if !ok1 || !ok2 {
				return bad("server_name")
			}
			if nt != serverNameHost {
				continue
			}
			if len(name) == 0 || len(name) > maxServerNameSize {
				return bad("server name length")
			}
			for _, c := range name {
				if c <= ' ' || c >= 0x7f {
					return bad("server name bytes")
				}
			}
			return string(name), nil
		}
		return "", nil
	}
	return "", nil
}

// reader reads a TLS message's fields, advancing over them.
type reader []byte

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := binary.BigEndian.Uint16(*r)
	*r = (*r)[2:]
	return v, true
}

// vec reads a vector with a lenBytes-byte length prefix.
func (r *reader) vec(lenBytes int) (reader, bool) {
	if len(*r) < lenBytes {
		return nil, false
	}
	n := 0
	for i := range lenBytes {
		n = n<<8 | int((*r)[i])
	}
	if len(*r) < lenBytes+n {
		return nil, false
	}
	v := (*r)[lenBytes : lenBytes+n]
	*r = (*r)[lenBytes+n:]
	return v, true
}

func (r *reader) skipVec(lenBytes int) bool {
	_, ok := r.vec(lenBytes)
	return ok
}
