// Package h2wire is vigil's HTTP/2 wire layer, shared by its two HTTP/2
// engines: the grpc listener's frame engine (balancer/grpcproxy), a data
// path that forwards frames between clients and backends, and the probes'
// small health client (checker/internal/probeconn). Both must judge what a
// peer sends by the same rules, so the rules live here: the checks RFC 9113
// asks of a request's and a response's header lists, the validation of a
// peer's SETTINGS, the judgement of a server's first bytes, the
// grpc-status and grpc-message codecs, and the mapping of reset codes to
// gRPC codes (internal/grpccode).
//
// Everything here runs on every RPC and allocates nothing on success: pure
// functions of their arguments, and HeaderReader, which decodes header
// blocks into storage it reuses.
package h2wire

import (
	"fmt"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// MalformedError is a header list RFC 9113 8.1.1 calls malformed: the
// stream fails with a stream error of type PROTOCOL_ERROR and nothing of it
// is forwarded.
type MalformedError struct{ Reason string }

func (e *MalformedError) Error() string { return "malformed HTTP/2 message: " + e.Reason }

func malformed(format string, args ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, args...)}
}

// Request is what a server needs to know of a request's header list.
type Request struct {
	Method string
	Path   string
	// Authority is the :authority field, or the host field without one
	// (RFC 9113 8.3.1); "" when neither is present.
	Authority string
	// ContentType is the content-type field, "" when absent.
	ContentType string
	// ContentLength is the content-length field, -1 when absent: the
	// DATA of the request must add up to it (RFC 9113 8.1.1).
	ContentLength int64
}

// IsGRPC tells whether the request is a gRPC call: POST with a gRPC
// content-type (application/grpc, or application/grpc+proto and the
// like; application/grpc-web is another protocol).
func (r *Request) IsGRPC() bool {
	const ct = "application/grpc"
	if r.Method != "POST" || !strings.HasPrefix(r.ContentType, ct) {
		return false
	}
	rest := r.ContentType[len(ct):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// CheckRequest judges a request's decoded header list as a server must
// (RFC 9113 8.2 and 8.3.1). It relies on the framer for what x/net's
// Framer with ReadMetaHeaders already refuses (invalid or uppercase
// names, invalid values, duplicated, unknown or misplaced pseudo-header
// fields) and checks the rest: the required pseudo-header fields,
// connection-specific fields, TE and content-length.
func CheckRequest(fields []hpack.HeaderField) (Request, error) {
	r := Request{ContentLength: -1}
	var sawMethod, sawScheme, sawPath, sawAuthority, sawRegular bool
	for i := range fields {
		f := &fields[i]
		if len(f.Name) > 0 && f.Name[0] == ':' {
			if sawRegular {
				return r, malformed("pseudo-header field %s after a regular field", f.Name)
			}
			var seen *bool
			switch f.Name {
			case ":method":
				seen, r.Method = &sawMethod, f.Value
			case ":scheme":
				seen = &sawScheme
			case ":path":
				seen, r.Path = &sawPath, f.Value
			case ":authority":
				seen, r.Authority = &sawAuthority, f.Value
			default:
				// :status belongs to responses; :protocol needs
				// SETTINGS_ENABLE_CONNECT_PROTOCOL, which vigil does not
				// send.
				return r, malformed("pseudo-header field %s in a request", f.Name)
			}
			if *seen {
				return r, malformed("duplicated pseudo-header field %s", f.Name)
			}
			*seen = true
			continue
		}
		sawRegular = true
		if err := checkRegular(f); err != nil {
			return r, err
		}
		switch f.Name {
		case "content-type":
			r.ContentType = f.Value
		case "host":
			if !sawAuthority {
				r.Authority = f.Value
			}
		case "content-length":
			n, ok := parseContentLength(f.Value)
			if !ok || (r.ContentLength >= 0 && n != r.ContentLength) {
				return r, malformed("content-length %q", f.Value)
			}
			r.ContentLength = n
		}
	}
	switch {
	case !sawMethod || r.Method == "":
		return r, malformed("no :method")
	case r.Method == "CONNECT":
		// CONNECT names an authority only (RFC 9113 8.5).
		if sawScheme || sawPath || !sawAuthority {
			return r, malformed("CONNECT with :scheme or :path, or without :authority")
		}
	case !sawScheme:
		return r, malformed("no :scheme")
	case !sawPath || r.Path == "":
		return r, malformed("no :path, or an empty one")
	}
	return r, nil
}

// CheckTrailers judges a trailer section (RFC 9113 8.1: no pseudo-header
// field, no connection-specific field).
func CheckTrailers(fields []hpack.HeaderField) error {
	for i := range fields {
		f := &fields[i]
		if len(f.Name) > 0 && f.Name[0] == ':' {
			return malformed("pseudo-header field %s in trailers", f.Name)
		}
		if err := checkRegular(f); err != nil {
			return err
		}
	}
	return nil
}

// checkRegular refuses the connection-specific fields HTTP/2 forbids
// (RFC 9113 8.2.2) and a TE other than "trailers".
func checkRegular(f *hpack.HeaderField) error {
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return malformed("connection-specific field %s", f.Name)
	case "te":
		if f.Value != "trailers" {
			return malformed("te %q (only \"trailers\" is allowed)", f.Value)
		}
	}
	return nil
}

// parseContentLength parses a content-length value: decimal digits only,
// no sign, no list.
func parseContentLength(v string) (int64, bool) {
	if v == "" || len(v) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
