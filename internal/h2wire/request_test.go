package h2wire

import (
	"errors"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/net/http2/hpack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func hf(kv ...string) []hpack.HeaderField {
	var out []hpack.HeaderField
	for i := 0; i < len(kv); i += 2 {
		out = append(out, hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestCheckRequest(t *testing.T) {
	base := []string{":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "x"}
	with := func(kv ...string) []hpack.HeaderField { return hf(append(append([]string{}, base...), kv...)...) }
	tests := []struct {
		name   string
		fields []hpack.HeaderField
		ok     bool
		length int64
	}{
		{"gRPC request", with("content-type", "application/grpc", "te", "trailers"), true, -1},
		{"host allowed", with("host", "x"), true, -1},
		{"content-length", with("content-length", "12"), true, 12},
		{"same content-length twice", with("content-length", "12", "content-length", "12"), true, 12},
		{"differing content-lengths", with("content-length", "12", "content-length", "13"), false, 0},
		{"content-length with a sign", with("content-length", "+1"), false, 0},
		{"content-length list", with("content-length", "1,1"), false, 0},
		{"content-length empty", with("content-length", ""), false, 0},
		{"content-length huge", with("content-length", "9999999999999999999"), false, 0},
		{"te gzip", with("te", "gzip"), false, 0},
		{"te trailers, gzip", with("te", "trailers, gzip"), false, 0},
		{"connection", with("connection", "close"), false, 0},
		{"keep-alive", with("keep-alive", "1"), false, 0},
		{"proxy-connection", with("proxy-connection", "1"), false, 0},
		{"transfer-encoding", with("transfer-encoding", "chunked"), false, 0},
		{"upgrade", with("upgrade", "h2c"), false, 0},
		{"no :method", hf(":scheme", "http", ":path", "/"), false, 0},
		{"empty :method", hf(":method", "", ":scheme", "http", ":path", "/"), false, 0},
		{"no :scheme", hf(":method", "GET", ":path", "/"), false, 0},
		{"no :path", hf(":method", "GET", ":scheme", "http"), false, 0},
		{"empty :path", hf(":method", "GET", ":scheme", "http", ":path", ""), false, 0},
		{"duplicated :method", hf(":method", "GET", ":method", "GET", ":scheme", "http", ":path", "/"), false, 0},
		{":status", hf(":status", "200", ":method", "GET", ":scheme", "http", ":path", "/"), false, 0},
		{":protocol", with(":protocol", "websocket"), false, 0},
		{"pseudo after regular", hf(":method", "GET", "a", "b", ":scheme", "http", ":path", "/"), false, 0},
		{"CONNECT", hf(":method", "CONNECT", ":authority", "x:1"), true, -1},
		{"CONNECT with a path", hf(":method", "CONNECT", ":authority", "x:1", ":path", "/"), false, 0},
		{"CONNECT without authority", hf(":method", "CONNECT"), false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := CheckRequest(tt.fields)
			var me *MalformedError
			switch {
			case tt.ok && err != nil:
				t.Fatalf("CheckRequest: %v", err)
			case !tt.ok && !errors.As(err, &me):
				t.Fatalf("CheckRequest = %v; want a *MalformedError", err)
			case tt.ok && r.ContentLength != tt.length:
				t.Errorf("ContentLength = %d; want %d", r.ContentLength, tt.length)
			}
		})
	}
}

func TestCheckTrailers(t *testing.T) {
	if err := CheckTrailers(hf("x-a", "1", "grpc-status", "0")); err != nil {
		t.Errorf("regular trailers: %v", err)
	}
	for _, bad := range [][]hpack.HeaderField{hf(":path", "/"), hf("connection", "close"), hf("te", "gzip")} {
		if CheckTrailers(bad) == nil {
			t.Errorf("CheckTrailers(%v) = nil; want an error", bad)
		}
	}
}

func TestCheckRequestAllocatesNothing(t *testing.T) {
	fields := hf(":method", "POST", ":scheme", "http", ":path", "/a.B/C", ":authority", "x",
		"content-type", "application/grpc", "te", "trailers", "grpc-timeout", "1S", "user-agent", "grpc-go")
	if n := testing.AllocsPerRun(100, func() { _, _ = CheckRequest(fields) }); n != 0 {
		t.Errorf("CheckRequest allocates %v times per call", n)
	}
}
