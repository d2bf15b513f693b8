package fixed

import (
	"testing"

	"github.com/vigil-proxy/vigil/balancer"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPicker(t *testing.T) {
	a, b := balancer.NewEndpoint("a:1"), balancer.NewEndpoint("b:1")
	tests := []struct {
		name      string
		endpoints []balancer.Weighted
		want      *balancer.Endpoint
		ok        bool
	}{
		{"none", nil, nil, true},
		{"one", []balancer.Weighted{{Endpoint: a, Weight: 5}}, a, true},
		{"two", []balancer.Weighted{{Endpoint: a}, {Endpoint: b}}, nil, false},
	}
	for _, tt := range tests {
		p, ok := Picker(tt.endpoints)
		if ok != tt.ok {
			t.Errorf("%s: Picker ok = %v, want %v", tt.name, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		for range 3 {
			if got := p.Pick(); got != tt.want {
				t.Errorf("%s: Pick = %v, want %v", tt.name, got, tt.want)
			}
		}
	}
}
