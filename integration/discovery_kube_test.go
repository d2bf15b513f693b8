package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vigil-proxy/vigil/cmd/vigil/deploy"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/discovery"
	"github.com/vigil-proxy/vigil/internal/kubetest"
)

// kubeBackends starts n backends on addresses of the test namespace (the API
// server refuses loopback ones), from IP4(first), all on one port.
func kubeBackends(t *testing.T, n, first int) ([]*backend, int32) {
	t.Helper()
	for range 20 {
		probe, err := net.Listen("tcp", net.JoinHostPort(kubetest.IP4(first), "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := probe.Addr().(*net.TCPAddr).Port
		probe.Close()
		ok := true
		for i := range n {
			l, err := net.Listen("tcp", net.JoinHostPort(kubetest.IP4(first+i), strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if !ok {
			continue
		}
		bs := make([]*backend, n)
		for i := range n {
			ip := kubetest.IP4(first + i)
			bs[i] = startBackend(t, ip, at(net.JoinHostPort(ip, strconv.Itoa(port))))
		}
		return bs, int32(port)
	}
	t.Fatal("no port free on all the addresses")
	return nil, 0
}

func kubeCluster(name, ns, service, kubeconfig string) yamlCluster {
	return yamlCluster{
		Name:      name,
		Discovery: "kubernetes:\n  service: " + service + "\n  namespace: " + ns + "\n  port: grpc\n  kubeconfig: \"" + kubeconfig + "\"",
		Health:    "mode: watch\ninterval: 1s\ntimeout: 500ms\nunhealthy_threshold: 2\nhealthy_threshold: 1",
	}
}

// kubeVigil runs vigil with clusters, as a pod would: in-cluster, as the
// service account ns/vigil allowed to read EndpointSlices.
func kubeVigil(t *testing.T, c *kubetest.Cluster, ns string, clusters ...yamlCluster) *vigilProc {
	t.Helper()
	env := c.InCluster(t, ns, "vigil")
	c.GrantEndpointSlices(t, ns, "system:serviceaccount:"+ns+":vigil")
	var listeners []yamlListener
	for _, cl := range clusters {
		listeners = append(listeners, yamlListener{Name: cl.Name, Cluster: cl.Name})
	}
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(path, []byte(yamlConfig{Admin: true, Listeners: listeners, Clusters: clusters}.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return startVigilEnv(t, path, env...)
}

func ports(port int32) []kubetest.Port { return []kubetest.Port{{Name: "grpc", Port: port}} }

func ready(bs ...*backend) []kubetest.Endpoint {
	var out []kubetest.Endpoint
	for _, b := range bs {
		out = append(out, kubetest.Ready(b.ip()))
	}
	return out
}

// TestDiscoveryKubernetes: EndpointSlices created, scaled up and down and
// split under load with no failed call; an endpoint turning terminating
// drains (its in-flight streams finish, it takes no new call). Each change
// reaches vigil's picker well within a second of the API write.
func TestDiscoveryKubernetes(t *testing.T) {
	c := kubetest.Shared(t) // not parallel: InCluster sets the environment
	ns := c.Namespace(t)
	bs, port := kubeBackends(t, 4, 100)
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", ports(port), ready(bs[0], bs[1])...))
	v := kubeVigil(t, c, ns, kubeCluster("orders", ns, "orders", ""))
	for _, b := range bs[:2] {
		v.wait(10*time.Second, 0, match("endpoint added", "cluster", "orders", "endpoint", b.addr, "source", "kubernetes"), "endpoint added "+b.addr)
		v.wait(10*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.addr)
	}
	load := startLoad(t, loadSpec{grpcAddr: v.listener("orders"), unary: 4, streams: 2})

	// Scale up: the new endpoint is added, probed, admitted, serving.
	mark := v.mark()
	start := time.Now()
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", ports(port), ready(bs[0], bs[1], bs[2])...))
	v.wait(10*time.Second, mark, match("endpoint added", "endpoint", bs[2].addr, "source", "kubernetes"), "scale up")
	t.Logf("scale up: API write to endpoint added in %v", time.Since(start).Round(time.Millisecond))
	eventually(t, 10*time.Second, func() bool { return bs[2].hits.Load() > 0 }, "no call reached the added endpoint")

	// Split in two, new slice first: nothing is removed.
	mark = v.mark()
	c.Apply(t, kubetest.Slice(ns, "orders-b", "orders", ports(port), ready(bs[2], bs[3])...))
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", ports(port), ready(bs[0], bs[1])...))
	v.wait(10*time.Second, mark, match("endpoint added", "endpoint", bs[3].addr), "the split's new endpoint")
	if rs := v.logs.find(mark, match("endpoint removed")); len(rs) > 0 {
		t.Errorf("the split removed endpoints: %v", rs)
	}

	// Terminating: streams open on the endpoint go on; no new call lands.
	streams := openStreams(t, v.listener("orders"), 8)
	mark = v.mark()
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", ports(port), kubetest.Ready(bs[0].ip()), kubetest.Terminating(bs[1].ip())))
	v.wait(10*time.Second, mark, match("endpoint removed", "endpoint", bs[1].addr, "source", "kubernetes"), "the terminating endpoint leaves the candidates")
	eventually(t, 10*time.Second, func() bool {
		_, e := endpointOf(t, clusters(t, v.adminBase()), "orders", bs[1].addr)
		return e["health"] == "draining"
	}, "the terminating endpoint is not draining")
	before := bs[1].hits.Load()
	time.Sleep(500 * time.Millisecond)
	if after := bs[1].hits.Load(); after != before {
		t.Errorf("the draining endpoint got %d new calls", after-before)
	}
	for _, s := range streams {
		if err := s.roundTrip(); err != nil {
			t.Errorf("an in-flight stream failed while its endpoint drained: %v", err)
		}
		s.close(t)
	}

	// Scale down: a slice deleted.
	mark = v.mark()
	c.Delete(t, ns, "orders-b")
	for _, b := range bs[2:] {
		v.wait(10*time.Second, mark, match("endpoint removed", "endpoint", b.addr, "source", "kubernetes"), "scale down "+b.addr)
	}
	load.requireClean(t)
}

// TestDiscoveryKubernetesAPIServerRestart: the API server killed keeps the
// last set (one `discovery failed`), the watch resumes after its restart
// (`discovery recovered`, and later changes arrive).
func TestDiscoveryKubernetesAPIServerRestart(t *testing.T) {
	c := kubetest.Start(t)
	ns := c.Namespace(t)
	bs, port := kubeBackends(t, 2, 200)
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", ports(port), ready(bs[0])...))
	v := kubeVigil(t, c, ns, kubeCluster("orders", ns, "orders", ""))
	v.wait(10*time.Second, 0, match("endpoint admitted", "endpoint", bs[0].addr), "admitted")
	load := startLoad(t, loadSpec{grpcAddr: v.listener("orders"), unary: 2})

	mark := v.mark()
	c.KillAPIServer(t)
	failed, _ := v.wait(15*time.Second, mark, match("discovery failed", "cluster", "orders", "source", "kubernetes"), "discovery failed")
	t.Logf("%v", failed)
	time.Sleep(2 * time.Second)
	if n := len(v.logs.find(mark, match("discovery failed"))); n != 1 {
		t.Errorf("%d discovery failed records, want 1", n)
	}
	c.StartAPIServer(t)
	v.wait(60*time.Second, mark, match("discovery recovered", "cluster", "orders", "source", "kubernetes"), "discovery recovered")
	c.Apply(t, kubetest.Slice(ns, "orders-a", "orders", ports(port), ready(bs[0], bs[1])...))
	v.wait(10*time.Second, mark, match("endpoint added", "endpoint", bs[1].addr), "a change after the restart")
	if rs := v.logs.find(mark, match("endpoint removed")); len(rs) > 0 {
		t.Errorf("endpoints removed while the API server was down: %v", rs)
	}
	load.requireClean(t)
}

// TestDiscoveryKubernetesForbidden: a user RBAC does not allow to read
// EndpointSlices gets a clear error.
func TestDiscoveryKubernetesForbidden(t *testing.T) {
	c := kubetest.Shared(t)
	ns := c.Namespace(t)
	kubeconfig := c.WriteKubeconfig(t, t.TempDir(), kubetest.NobodyUser)
	v := startVigil(t, yamlConfig{Admin: true,
		Listeners: []yamlListener{{Name: "orders", Cluster: "orders"}},
		Clusters:  []yamlCluster{kubeCluster("orders", ns, "orders", kubeconfig)},
	}.String())
	r, _ := v.wait(15*time.Second, 0, match("discovery failed", "cluster", "orders", "source", "kubernetes"), "discovery failed")
	if e := r.str("error"); !strings.Contains(e, `User "nobody" cannot`) || !strings.Contains(e, "endpointslices") {
		t.Errorf("error %q does not say who may not read what", e)
	}
}

// stream is one open FullDuplexCall through vigil.
type stream struct {
	s      testpb.TestService_FullDuplexCallClient
	cancel context.CancelFunc
}

func openStreams(t *testing.T, addr string, n int) []*stream {
	t.Helper()
	c := dialClient(t, addr)
	var out []*stream
	for range n {
		ctx, cancel := context.WithCancel(context.Background())
		s, err := c.tc.FullDuplexCall(ctx)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		st := &stream{s: s, cancel: cancel}
		if err := st.roundTrip(); err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}

func (s *stream) roundTrip() error {
	if err := s.s.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 16}}}); err != nil {
		return err
	}
	_, err := s.s.Recv()
	return err
}

func (s *stream) close(t *testing.T) {
	t.Helper()
	if err := s.s.CloseSend(); err != nil {
		t.Error(err)
	}
	if _, err := s.s.Recv(); err == nil {
		t.Error("the stream did not end")
	}
	s.cancel()
}

// TestDiscoveryKubernetesManifests runs what cmd/vigil/deploy/kubernetes.yaml
// describes: its ServiceAccount, Role and RoleBinding applied to the API
// server, vigil in-cluster as that account with the ConfigMap's
// configuration (its addresses moved to free loopback ports), in front of
// the Service its discovery names. The endpoints are discovered and
// admitted, calls go through, and vigil's own health, which the
// Deployment's grpc probes ask, is SERVING.
func TestDiscoveryKubernetesManifests(t *testing.T) {
	c := kubetest.Shared(t) // not parallel: InCluster sets the environment
	objs, err := deploy.Objects()
	if err != nil {
		t.Fatal(err)
	}
	var sa *corev1.ServiceAccount
	var cfgText string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *corev1.ServiceAccount:
			sa = o
			_, err = c.Admin.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = c.Admin.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = c.Admin.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ConfigMap:
			cfgText = o.Data["config.yaml"]
		}
		if err != nil {
			t.Fatalf("apply %T: %v", o, err)
		}
	}
	if sa == nil || cfgText == "" {
		t.Fatal("the manifests lack the ServiceAccount or the configuration")
	}
	cfg, err := config.Parse("config.yaml", []byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	var kube discovery.Kubernetes
	for _, cl := range cfg.Clusters {
		if cl.Discovery != nil && cl.Discovery.Kind == discovery.KindKubernetes {
			kube = cl.Discovery.Kubernetes
		}
	}
	// Free loopback ports instead of the pod's 0.0.0.0:8080 and :9901.
	for _, l := range cfg.Listeners {
		cfgText = strings.Replace(cfgText, "address: "+l.Address, "address: 127.0.0.1:0", 1)
	}
	cfgText = strings.Replace(cfgText, "address: "+cfg.Admin.Address, "address: 127.0.0.1:0", 1)
	cfgText = strings.Replace(cfgText, "format: json", "format: json\n  level: debug", 1)

	bs, port := kubeBackends(t, 2, 300)
	c.Apply(t, kubetest.Slice(kube.Namespace, kube.Service+"-manifests", kube.Service,
		[]kubetest.Port{{Name: kube.PortName, Port: port}}, ready(bs...)...))
	env := c.InCluster(t, sa.Namespace, sa.Name) // the token of the manifests' account
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	v := startVigilEnv(t, path, env...)
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.addr)
	}
	addr := v.listener(cfg.Listeners[0].Name)
	cl := dialClient(t, addr)
	for range 10 {
		if _, err := cl.call(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// Ready once the first round of probes, discovered endpoints included,
	// is done: moments after the admissions.
	hc := healthpb.NewHealthClient(cl.conn)
	eventually(t, 10*time.Second, func() bool {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	}, "vigil's own health, as the grpc probes ask it, is not SERVING")
}
