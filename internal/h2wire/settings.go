package h2wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/net/http2"
)

// ConnError is a connection error found in what a peer sent: the
// connection ends with a GOAWAY carrying Code (RFC 9113 5.4.1).
type ConnError struct {
	Code   http2.ErrCode
	Reason string
}

func (e *ConnError) Error() string { return e.Code.String() + ": " + e.Reason }

// CheckSettings validates a peer's SETTINGS frame as RFC 9113 6.5.2 asks,
// before any of it is applied: every value in range, and no server
// enabling push (fromServer: the peer is a server). The engines apply the
// frame only when it returns nil; a change of SETTINGS_INITIAL_WINDOW_SIZE
// that takes an open stream's window over 2^31-1 is theirs to check
// (RFC 9113 6.9.2), as they hold the windows.
func CheckSettings(f *http2.SettingsFrame, fromServer bool) error {
	return f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			code := http2.ErrCodeProtocol
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				code = http2.ErrCode(ce)
			}
			return &ConnError{code, fmt.Sprintf("invalid SETTINGS value %v", s)}
		}
		if s.ID == http2.SettingEnablePush && fromServer && s.Val != 0 {
			return &ConnError{http2.ErrCodeProtocol, "a server sent SETTINGS_ENABLE_PUSH=1"}
		}
		return nil
	})
}

// FrameHeaderLen is the size of an HTTP/2 frame header.
const FrameHeaderLen = 9

// CheckServerPreface judges the first frame header a server sent (RFC
// 9113 3.4: its preface is a SETTINGS frame), so that a peer that is not
// an HTTP/2 server is told apart at once, before waiting for a payload
// that may never come. maxFrame is the largest frame the client reads.
func CheckServerPreface(hdr []byte, maxFrame uint32) error {
	if len(hdr) < FrameHeaderLen {
		return fmt.Errorf("not HTTP/2: the backend's first bytes %q are not a frame header", hdr)
	}
	hdr = hdr[:FrameHeaderLen]
	if IsTLSRecord(hdr) {
		return fmt.Errorf("%w: the backend's first bytes %q are a TLS record, not HTTP/2 (h2c)", ErrTLSServer, hdr)
	}
	if bytes.HasPrefix(hdr, []byte("HTTP/")) {
		return fmt.Errorf("the backend answered %q: an HTTP/1 server, not HTTP/2 (h2c)", hdr)
	}
	length := uint32(hdr[0])<<16 | uint32(hdr[1])<<8 | uint32(hdr[2])
	typ, flags := http2.FrameType(hdr[3]), http2.Flags(hdr[4])
	streamID := binary.BigEndian.Uint32(hdr[5:]) & (1<<31 - 1)
	if typ != http2.FrameSettings || flags.Has(http2.FlagSettingsAck) || streamID != 0 || length%6 != 0 || length > maxFrame {
		return fmt.Errorf("not HTTP/2: the backend's first bytes %q are not a SETTINGS frame", hdr)
	}
	return nil
}

// ErrTLSServer is wrapped by CheckServerPreface's error when the server's
// first bytes are a TLS record: it serves TLS to a plaintext client.
var ErrTLSServer = errors.New("the backend speaks TLS")

// IsTLSRecord reports whether hdr starts like a TLS record of a server
// (an alert or a handshake message, version 3.x). No valid server preface
// does: as a frame header, those bytes give a length over 1 MiB.
func IsTLSRecord(hdr []byte) bool {
	return len(hdr) >= 3 && (hdr[0] == 0x15 || hdr[0] == 0x16) && hdr[1] == 0x03 && hdr[2] <= 0x04
}

// FramerError is the ConnError of a connection error that x/net's
// Framer.ReadFrame returned (an http2.ConnectionError, which carries only
// a code), so that an engine can tell the peer why in its GOAWAY and its
// callers what broke; typ is the type of the frame being read (from its
// header, peeked before), detail the Framer's ErrorDetail. ok is false
// for any other error.
func FramerError(err error, typ http2.FrameType, detail error) (ce *ConnError, ok bool) {
	var xe http2.ConnectionError
	if !errors.As(err, &xe) {
		return nil, false
	}
	code := http2.ErrCode(xe)
	reason := fmt.Sprintf("invalid %v frame", typ)
	switch {
	case detail != nil:
		reason += ": " + detail.Error()
	case typ == http2.FrameSettings && code == http2.ErrCodeFlowControl:
		// The one FLOW_CONTROL_ERROR a SETTINGS frame can hold (RFC
		// 9113 6.5.2); x/net checks it while parsing, before a caller
		// could run CheckSettings.
		reason = "invalid SETTINGS value: SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1"
	}
	return &ConnError{code, reason}, true
}
