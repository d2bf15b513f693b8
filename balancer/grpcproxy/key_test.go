package grpcproxy

import (
	"testing"

	"golang.org/x/net/http2/hpack"

	"github.com/vigil-proxy/vigil/balancer"
)

func TestKeyOf(t *testing.T) {
	headers := []hpack.HeaderField{
		{Name: ":path", Value: "/demo.Demo/Hello"},
		{Name: "x-session-id", Value: "s-1"},
		{Name: "x-session-id", Value: "s-2"},
		{Name: "x-empty", Value: ""},
	}
	tests := []struct {
		name, header string
		want         uint64
		random       bool
	}{
		{"the first value", "x-session-id", balancer.HashString("s-1"), false},
		{"an empty value is a key", "x-empty", balancer.HashString(""), false},
		{"missing header: random", "x-user", 0, true},
		{"no header configured: random", "", 0, true},
	}
	for _, tt := range tests {
		a, b := keyOf(tt.header, headers), keyOf(tt.header, headers)
		switch {
		case tt.random && a == b:
			t.Errorf("%s: the same key %#x twice, want random ones", tt.name, a)
		case !tt.random && (a != tt.want || b != tt.want):
			t.Errorf("%s: keys %#x, %#x, want %#x", tt.name, a, b, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { keyOf("x-session-id", headers) }); n != 0 {
		t.Errorf("keyOf allocates %v times", n)
	}
}
