package balancer_test

import (
	"net"
	"testing"

	"github.com/vigil-proxy/vigil/balancer"
)

func TestHashIP(t *testing.T) {
	v4 := balancer.HashIP(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1).To4(), Port: 1})
	tests := []struct {
		name string
		addr net.Addr
		same bool
	}{
		{"another port", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 2}, true},
		{"IPv4-mapped IPv6", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 1}, true},
		{"another address", &net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1}, false},
		{"UDP, same address", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}, true},
	}
	for _, tt := range tests {
		if got := balancer.HashIP(tt.addr) == v4; got != tt.same {
			t.Errorf("%s: same hash as 192.0.2.1 = %v, want %v", tt.name, got, tt.same)
		}
	}
	// No IP: random hashes, not one fixed value every such client shares.
	unix := &net.UnixAddr{Name: "/tmp/s", Net: "unix"}
	for _, addr := range []net.Addr{unix, nil} {
		a, b := balancer.HashIP(addr), balancer.HashIP(addr)
		if a == b {
			t.Errorf("HashIP(%v) twice = %#x: a fixed hash, want random ones", addr, a)
		}
	}
	if n := testing.AllocsPerRun(100, func() { balancer.HashIP(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1)}) }); n > 0 {
		t.Errorf("HashIP allocates %v times", n)
	}
}

// TestHashesAreStable pins the key hash (xxHash64, seed 0): other vigil
// processes, and other versions, must place a key on the same point.
func TestHashesAreStable(t *testing.T) {
	if got, want := balancer.HashString(""), uint64(0xef46db3751d8e999); got != want {
		t.Errorf("HashString(\"\") = %#x, want %#x (XXH64 of nothing)", got, want)
	}
	if got, want := balancer.HashString("abc"), balancer.HashBytes([]byte("abc")); got != want {
		t.Errorf("HashString and HashBytes differ: %#x, %#x", got, want)
	}
}

// TestPickHashSkips: every policy's PickHash keeps out of skip, and the
// ones that do not hash still spread their picks.
func TestPickHashSkips(t *testing.T) {
	for _, policy := range shippedPolicies {
		t.Run(policy, func(t *testing.T) {
			c := balancer.NewCluster("c")
			ms := members(healthy, healthy, healthy)
			c.Update(mustPolicy(t, policy), 0, ms)
			skip := []*balancer.Endpoint{ms[0].Endpoint, ms[1].Endpoint}
			for h := range uint64(200) {
				if e := c.PickHash(h*0x9E3779B97F4A7C15, skip); e != ms[2].Endpoint {
					t.Fatalf("PickHash skipping ep0, ep1 = %v, want ep2", e)
				}
			}
			all := []*balancer.Endpoint{ms[0].Endpoint, ms[1].Endpoint, ms[2].Endpoint}
			if e := c.PickHash(1, all); e != nil {
				t.Fatalf("PickHash skipping every endpoint = %v, want nil", e)
			}
			if n := testing.AllocsPerRun(100, func() { c.PickHash(7, skip) }); n != 0 {
				t.Errorf("PickHash allocates %v times", n)
			}
			if e := balancer.NewCluster("empty").PickHash(1, nil); e != nil {
				t.Errorf("PickHash on an empty cluster = %v", e)
			}
		})
	}
}
