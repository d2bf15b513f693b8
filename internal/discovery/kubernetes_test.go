package discovery

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/vigil-proxy/vigil/internal/kubetest"
)

var grpcPort = []kubetest.Port{{Name: "grpc", Port: 50051}, {Name: "metrics", Port: 9090}}

func kubeSpec(kubeconfig, ns, service string) Spec {
	return Spec{Kind: KindKubernetes, Kubernetes: Kubernetes{Service: service, Namespace: ns, PortName: "grpc", Kubeconfig: kubeconfig}}
}

func ep(addr string, draining bool) Endpoint {
	return Endpoint{Address: addr, Weight: 1, Draining: draining}
}

// waitSet waits for an Updated event with exactly want.
func (e *events) waitSet(t *testing.T, want ...Endpoint) {
	t.Helper()
	if want == nil {
		want = []Endpoint{}
	}
	var last []Endpoint
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ev := e.waitFor(t, "update", func(ev Event) bool { return ev.Kind == Updated || ev.Kind == Failed })
		if ev.Kind == Failed {
			t.Fatalf("failed while waiting for %v: %v", want, ev.Err)
		}
		if last = ev.Endpoints; slices.Equal(last, want) {
			return
		}
	}
	t.Fatalf("set %v, want %v", last, want)
}

func TestKubernetesSlices(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	c.GrantEndpointSlices(t, ns, kubetest.VigilUser)
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), kubetest.VigilUser)
	evs := newEvents()
	w := Start(kubeSpec(kubeconfig, ns, "orders"), evs.handle)
	t.Cleanup(w.Stop)

	// No slice yet: an empty set, once the informer listed.
	evs.waitSet(t)

	ip := kubetest.IP4
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort,
		kubetest.Ready(ip(0)), kubetest.Ready(ip(1)), kubetest.NotReady(ip(2)), kubetest.Terminating(ip(3))))
	evs.waitSet(t, ep(ip(0)+":50051", false), ep(ip(1)+":50051", false), ep(ip(3)+":50051", true))

	// Scale up.
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort,
		kubetest.Ready(ip(0)), kubetest.Ready(ip(1)), kubetest.Ready(ip(2)), kubetest.Ready(ip(4))))
	four := []Endpoint{ep(ip(0)+":50051", false), ep(ip(1)+":50051", false), ep(ip(2)+":50051", false), ep(ip(4)+":50051", false)}
	evs.waitSet(t, four...)

	// Split in two, the way the EndpointSlice controller does: the new
	// slice first, then the old one shrinks. The set never changes.
	c.Apply(t, kubetest.Slice(ns, "orders-b", "orders", grpcPort, kubetest.Ready(ip(2)), kubetest.Ready(ip(4))))
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort, kubetest.Ready(ip(0)), kubetest.Ready(ip(1))))
	// A slice of another Service, and one without the port, change nothing.
	c.Apply(t, kubetest.Slice(ns, "billing-a", "billing", grpcPort, kubetest.Ready(ip(9))))
	c.Apply(t, kubetest.Slice(ns, "orders-c", "orders", []kubetest.Port{{Name: "metrics", Port: 9090}}, kubetest.Ready(ip(8))))
	// A marker change to know the informer saw all of the above.
	c.Apply(t, kubetest.Slice(ns, "orders-b", "orders", grpcPort, kubetest.Ready(ip(2)), kubetest.Ready(ip(4)), kubetest.Ready(ip(5))))
	for {
		ev := evs.waitFor(t, "update", kindIs(Updated))
		if slices.Equal(ev.Endpoints, append(slices.Clone(four), ep(ip(5)+":50051", false))) {
			break
		}
		if !slices.Equal(ev.Endpoints, four) {
			t.Fatalf("during the split: %v", ev.Endpoints)
		}
	}

	// Scale down: a slice deleted, an endpoint turning terminating.
	c.Delete(t, ns, "orders-b")
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort, kubetest.Ready(ip(0)), kubetest.Terminating(ip(1))))
	evs.waitSet(t, ep(ip(0)+":50051", false), ep(ip(1)+":50051", true))

	// No ready endpoint left: the set empties.
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort, kubetest.NotReady(ip(0))))
	evs.waitSet(t)
}

func TestKubernetesPortNumberAndIPv6(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	c.GrantEndpointSlices(t, ns, kubetest.VigilUser)
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), kubetest.VigilUser)
	c.Apply(t, kubetest.Slice(ns, "api-v6", "api", []kubetest.Port{{Port: 8443}}, kubetest.Ready(kubetest.IP6(0))))
	c.Apply(t, kubetest.Slice(ns, "api-v4", "api", []kubetest.Port{{Port: 8443}}, kubetest.Ready(kubetest.IP4(0))))

	evs := newEvents()
	spec := kubeSpec(kubeconfig, ns, "api")
	spec.Kubernetes.PortName, spec.Kubernetes.PortNumber = "", 8443
	w := Start(spec, evs.handle)
	t.Cleanup(w.Stop)
	evs.waitSet(t, ep(kubetest.IP4(0)+":8443", false), ep("["+kubetest.IP6(0)+"]:8443", false))

	// The unnamed port is also the port named "".
	evsByName := newEvents()
	spec.Kubernetes.PortName, spec.Kubernetes.PortNumber = "", 0
	w2 := Start(spec, evsByName.handle)
	t.Cleanup(w2.Stop)
	evsByName.waitSet(t, ep(kubetest.IP4(0)+":8443", false), ep("["+kubetest.IP6(0)+"]:8443", false))
}

func TestKubernetesForbidden(t *testing.T) {
	t.Parallel()
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), kubetest.NobodyUser)
	evs := newEvents()
	w := Start(kubeSpec(kubeconfig, ns, "orders"), evs.handle)
	t.Cleanup(w.Stop)
	ev := evs.waitFor(t, "failed", kindIs(Failed))
	if !ev.First || !apierrors.IsForbidden(ev.Err) {
		t.Fatalf("got %+v, want a first failure that is Forbidden", ev)
	}
	t.Logf("error: %v", ev.Err)
	var status apierrors.APIStatus
	if !errors.As(ev.Err, &status) {
		t.Errorf("the error is no API status: %T", ev.Err)
	}
}

func TestKubernetesInCluster(t *testing.T) {
	c := kubetest.Shared(t) // not parallel: it sets the process's environment
	ns := c.Namespace(t)
	c.InCluster(t, ns, "vigil")
	c.GrantEndpointSlices(t, ns, "system:serviceaccount:"+ns+":vigil")
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort, kubetest.Ready(kubetest.IP4(7))))
	evs := newEvents()
	w := Start(kubeSpec("", ns, "orders"), evs.handle)
	t.Cleanup(w.Stop)
	evs.waitSet(t, ep(kubetest.IP4(7)+":50051", false))
}

func TestKubernetesAPIServerRestart(t *testing.T) {
	t.Parallel()
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	c.GrantEndpointSlices(t, ns, kubetest.VigilUser)
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), kubetest.VigilUser)
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort, kubetest.Ready(kubetest.IP4(0))))
	evs := newEvents()
	w := Start(kubeSpec(kubeconfig, ns, "orders"), evs.handle)
	t.Cleanup(w.Stop)
	evs.waitSet(t, ep(kubetest.IP4(0)+":50051", false))

	c.KillAPIServer(t)
	ev := evs.waitFor(t, "failed", func(ev Event) bool { return ev.Kind != Unchanged })
	if ev.Kind != Failed || !ev.First {
		t.Fatalf("after the kill: %+v, want the first failure", ev)
	}
	t.Logf("error: %v", ev.Err)
	c.StartAPIServer(t)
	ev = evs.waitFor(t, "recovered", func(ev Event) bool { return ev.Kind != Failed })
	if ev.Kind != Recovered {
		t.Fatalf("after the restart: %+v, want Recovered", ev)
	}
	// The watch resumed: a change made now arrives.
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", grpcPort, kubetest.Ready(kubetest.IP4(0)), kubetest.Ready(kubetest.IP4(1))))
	evs.waitSet(t, ep(kubetest.IP4(0)+":50051", false), ep(kubetest.IP4(1)+":50051", false))
}

func TestCheckKubeconfig(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("{{{ not yaml"), 0o600)
	noContext := filepath.Join(dir, "empty")
	os.WriteFile(noContext, []byte("apiVersion: v1\nkind: Config\n"), 0o600)
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	for _, tt := range []struct {
		path string
		ok   bool
	}{
		{filepath.Join(dir, "missing"), false},
		{garbage, false},
		{noContext, false},
		{good, true},
	} {
		err := CheckKubeconfig(tt.path)
		if (err == nil) != tt.ok {
			t.Errorf("CheckKubeconfig(%s) = %v, want ok %v", filepath.Base(tt.path), err, tt.ok)
		}
	}
}
