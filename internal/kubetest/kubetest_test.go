package kubetest

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) {
	Main(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

func TestIPs(t *testing.T) {
	r4 := netip.MustParsePrefix(BackendRange4)
	r6 := netip.MustParsePrefix(BackendRange6)
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 253, 254, 255, 65533, 65534, 65535, 70000} {
		a := netip.MustParseAddr(IP4(i))
		if !r4.Contains(a) || a == r4.Addr().Next() || seen[a.String()] {
			t.Errorf("IP4(%d) = %s", i, a)
		}
		seen[a.String()] = true
		if b := netip.MustParseAddr(IP6(i)); !r6.Contains(b) {
			t.Errorf("IP6(%d) = %s", i, b)
		}
	}
}

// The API server refuses loopback EndpointSlice addresses, which is why the
// tests live in a namespace of their own with addresses that it accepts, and
// that a backend there can listen on.
func TestSlicesAndBackendAddresses(t *testing.T) {
	c := Shared(t)
	ns := c.Namespace(t)
	err := func() error {
		_, err := c.Admin.DiscoveryV1().EndpointSlices(ns).Create(ctx(t), Slice(ns, "lo", "s", []Port{{Port: 80}}, Ready("127.0.0.1")), metav1.CreateOptions{})
		return err
	}()
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("a loopback address: %v, want refused", err)
	}
	c.Apply(t, Slice(ns, "ok", "s", []Port{{Port: 80}}, Ready(IP4(0))))
	c.Apply(t, Slice(ns, "ok6", "s", []Port{{Port: 80}}, Ready(IP6(0))))
	for _, ip := range []string{IP4(0), IP4(70000), IP6(0)} {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("listen on %s: %v", ip, err)
		}
		conn, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatalf("dial %s: %v", l.Addr(), err)
		}
		conn.Close()
		l.Close()
	}
}
