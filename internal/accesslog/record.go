package accesslog

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/internal/grpccode"
)

// Format is the encoding of records.
type Format uint8

// Formats.
const (
	JSON Format = iota // one JSON object per line
	Text               // key=value pairs, values quoted when needed
)

// ParseFormat reads "json" or "text".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "json":
		return JSON, nil
	case "text":
		return Text, nil
	}
	return 0, fmt.Errorf("unknown access log format %q (json or text)", s)
}

// Kind says which listener a record is from, and so which keys it has.
type Kind uint8

// Kinds.
const (
	GRPC Kind = iota // one RPC of a grpc listener
	TCP              // one connection of a tcp listener
)

// TCP results, the values of a tcp record's result.
const (
	ResultClosed        = "closed"
	ResultNoEndpoint    = "no_endpoint"
	ResultConnectFailed = "connect_failed"
	ResultIdleTimeout   = "idle_timeout"
	ResultDrained       = "drained"
)

// Record is one access log record. It is passed by value through the
// Sink's buffer: the strings it holds are never copied, only referenced.
// Listener and the format are stamped by the Logger.
type Record struct {
	Kind   Kind
	format Format
	// Start is when the RPC began or the connection was accepted: the
	// record's time.
	Start    time.Time
	Duration time.Duration
	Listener string
	Route    string
	Cluster  string
	// Endpoint is the address of the endpoint picked, "" when none was.
	Endpoint string
	// Client is the client's address (ip:port); nil is written as "".
	Client net.Addr

	// GRPC.
	Method        string // :path, /pkg.Service/Method
	Authority     string
	UserAgent     string
	Status        codes.Code
	RequestBytes  int64 // DATA payload from the client (messages with their 5-byte prefixes)
	ResponseBytes int64 // DATA payload from the backend
	Attempts      int   // endpoints tried

	// TCP.
	SNI      string
	BytesIn  int64 // client to endpoint
	BytesOut int64 // endpoint to client
	Result   string
}

// appendRecord appends r in its format, and a newline, to b.
func appendRecord(b []byte, r *Record) []byte {
	e := encoder{b: b, text: r.format == Text}
	e.begin()
	e.key("time")
	e.b = appendTime(e.b, r.Start, e.text)
	e.str("listener", r.Listener)
	e.str("route", r.Route)
	e.str("cluster", r.Cluster)
	e.str("endpoint", r.Endpoint)
	if r.Kind == TCP {
		e.key("client")
		e.b = appendAddr(e.b, r.Client, e.text)
		e.str("sni", r.SNI)
		e.key("duration_ms")
		e.b = appendMillis(e.b, r.Duration)
		e.int("bytes_in", r.BytesIn)
		e.int("bytes_out", r.BytesOut)
		e.str("result", r.Result)
	} else {
		e.str("method", r.Method)
		e.str("authority", r.Authority)
		e.str("grpc_status", grpccode.Name(r.Status))
		e.key("duration_ms")
		e.b = appendMillis(e.b, r.Duration)
		e.int("request_bytes", r.RequestBytes)
		e.int("response_bytes", r.ResponseBytes)
		e.int("attempts", int64(r.Attempts))
		e.key("client")
		e.b = appendAddr(e.b, r.Client, e.text)
		e.str("user_agent", r.UserAgent)
	}
	e.end()
	return e.b
}

// encoder writes the keys and values of one record.
type encoder struct {
	b     []byte
	text  bool
	first bool
}

func (e *encoder) begin() {
	e.first = true
	if !e.text {
		e.b = append(e.b, '{')
	}
}

func (e *encoder) end() {
	if !e.text {
		e.b = append(e.b, '}')
	}
	e.b = append(e.b, '\n')
}

// key writes a key and its separators; the value follows.
func (e *encoder) key(k string) {
	if !e.first {
		if e.text {
			e.b = append(e.b, ' ')
		} else {
			e.b = append(e.b, ',')
		}
	}
	e.first = false
	if e.text {
		e.b = append(e.b, k...)
		e.b = append(e.b, '=')
		return
	}
	e.b = append(e.b, '"')
	e.b = append(e.b, k...)
	e.b = append(e.b, '"', ':')
}

// str writes a key and a string value.
func (e *encoder) str(k, v string) {
	e.key(k)
	if e.text {
		e.b = appendTextString(e.b, v)
	} else {
		e.b = appendJSONString(e.b, v)
	}
}

func (e *encoder) int(k string, v int64) {
	e.key(k)
	e.b = strconv.AppendInt(e.b, v, 10)
}

// appendTime writes t in UTC as RFC 3339 with milliseconds.
func appendTime(b []byte, t time.Time, text bool) []byte {
	if !text {
		b = append(b, '"')
	}
	b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	if !text {
		b = append(b, '"')
	}
	return b
}

// appendMillis writes d in milliseconds with microsecond precision.
func appendMillis(b []byte, d time.Duration) []byte {
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
}

// appendAddr writes a client address as ip:port, quoted in JSON.
func appendAddr(b []byte, a net.Addr, text bool) []byte {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case nil:
	default:
		if text {
			return appendTextString(b, a.String())
		}
		return appendJSONString(b, a.String())
	}
	if !text {
		b = append(b, '"')
	}
	if ap.IsValid() {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		b = ap.AppendTo(b)
	} else if text {
		b = append(b, `""`...)
	}
	if !text {
		b = append(b, '"')
	}
	return b
}

const hex = "0123456789abcdef"

// appendJSONString writes s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD (clients
// choose :path, :authority and user-agent; the log must stay valid JSON).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			// Valid JSON, but not valid JavaScript: escaped, as
			// encoding/json does.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendTextString writes s bare when it is a plain token, else quoted
// Go-style (as log/slog's text handler does): "" for the empty string.
func appendTextString(b []byte, s string) []byte {
	if s == "" || needsQuote(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

func needsQuote(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return true
		}
	}
	return false
}
