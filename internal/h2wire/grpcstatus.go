package h2wire

import (
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
)

// EncodeGRPCMessage percent-encodes a status message for grpc-message as
// gRPC's HTTP/2 protocol requires (bytes outside printable ASCII, and %).
func EncodeGRPCMessage(msg string) string {
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			return percentEncode(msg)
		}
	}
	return msg
}

func percentEncode(msg string) string {
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(msg)*2)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			out = append(out, '%', hex[c>>4], hex[c&15])
			continue
		}
		out = append(out, c)
	}
	return string(out)
}

// DecodeGRPCMessage undoes EncodeGRPCMessage; a % not followed by two hex
// digits stays as it is, as grpc-go reads it.
func DecodeGRPCMessage(msg string) string {
	if !strings.Contains(msg, "%") {
		return msg
	}
	var b strings.Builder
	b.Grow(len(msg))
	for i := 0; i < len(msg); i++ {
		if msg[i] == '%' && i+2 < len(msg) {
			if v, err := strconv.ParseUint(msg[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(msg[i])
	}
	return b.String()
}

// ParseGRPCStatus reads a grpc-status value: a decimal code. ok is false
// for anything else (a malformed status: INTERNAL, as grpc-go reads it).
func ParseGRPCStatus(v string) (code codes.Code, ok bool) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return codes.Internal, false
	}
	return codes.Code(n), true
}

// FormatGRPCStatus writes a code as grpc-status.
func FormatGRPCStatus(c codes.Code) string { return strconv.FormatUint(uint64(c), 10) }
