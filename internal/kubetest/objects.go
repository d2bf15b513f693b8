package kubetest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var namespaces atomic.Int64

// Namespace creates a namespace of the test's own and returns its name.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", namespaces.Add(1), strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())))
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	_, err := c.Admin.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// GrantEndpointSlices lets user (a user name, or "system:serviceaccount:NS:NAME")
// get, list and watch EndpointSlices in namespace ns.
func (c *Cluster) GrantEndpointSlices(t testing.TB, ns, user string) {
	t.Helper()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "endpointslice-reader", Namespace: ns},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{"discovery.k8s.io"},
			Resources: []string{"endpointslices"},
			Verbs:     []string{"get", "list", "watch"},
		}},
	}
	if _, err := c.Admin.RbacV1().Roles(ns).Create(ctx(t), role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "endpointslice-reader-" + strings.ReplaceAll(user, ":", "-"), Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}
	if _, err := c.Admin.RbacV1().RoleBindings(ns).Create(ctx(t), binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Endpoint is one endpoint of a slice, as a test writes it.
type Endpoint struct {
	IP string
	// Ready, Serving and Terminating are its conditions; nil leaves one
	// unset (ready and serving then mean true, terminating false).
	Ready, Serving, Terminating *bool
}

// Ready is a ready endpoint.
func Ready(ip string) Endpoint {
	return Endpoint{IP: ip, Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)}
}

// NotReady is an endpoint that is neither ready nor terminating.
func NotReady(ip string) Endpoint {
	return Endpoint{IP: ip, Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
}

// Terminating is an endpoint that still serves while it terminates.
func Terminating(ip string) Endpoint {
	return Endpoint{IP: ip, Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
}

// Port is one port of a slice.
type Port struct {
	Name string
	Port int32
}

// Slice builds an EndpointSlice of service with ports and endpoints; the
// address type follows the first endpoint's address (IPv4 by default).
func Slice(ns, name, service string, ports []Port, endpoints ...Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ns,
			Labels: map[string]string{
				discoveryv1.LabelServiceName: service,
				discoveryv1.LabelManagedBy:   "vigil-tests",
			},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	if len(endpoints) > 0 {
		if ip, err := netip.ParseAddr(endpoints[0].IP); err == nil && ip.Is6() {
			s.AddressType = discoveryv1.AddressTypeIPv6
		}
	}
	for _, p := range ports {
		sp := discoveryv1.EndpointPort{Port: ptr.To(p.Port), Protocol: ptr.To(corev1.ProtocolTCP)}
		if p.Name != "" {
			sp.Name = ptr.To(p.Name)
		}
		s.Ports = append(s.Ports, sp)
	}
	for _, e := range endpoints {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.IP},
			Conditions: discoveryv1.EndpointConditions{Ready: e.Ready, Serving: e.Serving, Terminating: e.Terminating},
		})
	}
	return s
}

// Apply creates the slice, or replaces the one of that name.
func (c *Cluster) Apply(t testing.TB, s *discoveryv1.EndpointSlice) {
	t.Helper()
	api := c.Admin.DiscoveryV1().EndpointSlices(s.Namespace)
	_, err := api.Create(ctx(t), s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		var cur *discoveryv1.EndpointSlice
		if cur, err = api.Get(ctx(t), s.Name, metav1.GetOptions{}); err == nil {
			s = s.DeepCopy()
			s.ResourceVersion = cur.ResourceVersion
			_, err = api.Update(ctx(t), s, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("apply endpointslice %s/%s: %v", s.Namespace, s.Name, err)
	}
}

// Delete deletes the slice ns/name.
func (c *Cluster) Delete(t testing.TB, ns, name string) {
	t.Helper()
	if err := c.Admin.DiscoveryV1().EndpointSlices(ns).Delete(ctx(t), name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete endpointslice %s/%s: %v", ns, name, err)
	}
}

// IP4 is the i-th address of BackendRange4 (i from 0), skipping the
// range's first address, which the API server advertises.
func IP4(i int) string {
	i += 2
	return fmt.Sprintf("198.%d.%d.%d", 18+i>>16&1, i>>8&0xff, i&0xff)
}

// IP6 is the i-th address of BackendRange6 (i from 0).
// It is in canonical form, as the API server requires.
func IP6(i int) string {
	i++
	b := netip.MustParseAddr("2001:db8::").As16()
	b[12], b[13], b[14], b[15] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
	return netip.AddrFrom16(b).String()
}

// InCluster makes this process look like a pod running as the service
// account ns/name: a token the API server issued for it, and the CA, where
// client-go's in-cluster configuration reads them (/var/run/secrets, on the
// namespace's private /run), and the environment variables a pod has. It
// returns those variables, for a process started with them (vigil), and
// sets them in this one until the test ends.
func (c *Cluster) InCluster(t testing.TB, ns, name string) []string {
	t.Helper()
	if !InNamespace() {
		t.Fatal("InCluster needs the test namespace (its private /run)")
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := c.Admin.CoreV1().ServiceAccounts(ns).Create(ctx(t), sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tok, err := c.Admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx(t), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("request a token for service account %s/%s: %v", ns, name, err)
	}
	dir := "/run/secrets/kubernetes.io/serviceaccount"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for file, data := range map[string][]byte{"token": []byte(tok.Status.Token), "ca.crt": ca, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.RemoveAll("/run/secrets") })
	env := []string{"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=" + strconv.Itoa(c.port)}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return env
}
