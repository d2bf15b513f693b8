package deploy

import (
	"context"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/discovery"
	"github.com/vigil-proxy/vigil/internal/kubetest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	kubetest.Main(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

// manifests decodes kubernetes.yaml, failing the test on any error.
func manifests(t *testing.T) []runtime.Object {
	t.Helper()
	objs, err := Objects()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		t.Logf("%T %s", o, o.(metav1.Object).GetName())
	}
	return objs
}

type parsed struct {
	sa         *corev1.ServiceAccount
	role       *rbacv1.Role
	binding    *rbacv1.RoleBinding
	configMap  *corev1.ConfigMap
	deployment *appsv1.Deployment
	service    *corev1.Service
}

func parse(t *testing.T) parsed {
	var p parsed
	for _, obj := range manifests(t) {
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			p.sa = o
		case *rbacv1.Role:
			p.role = o
		case *rbacv1.RoleBinding:
			p.binding = o
		case *corev1.ConfigMap:
			p.configMap = o
		case *appsv1.Deployment:
			p.deployment = o
		case *corev1.Service:
			p.service = o
		default:
			t.Errorf("unexpected %T", obj)
		}
	}
	if p.sa == nil || p.role == nil || p.binding == nil || p.configMap == nil || p.deployment == nil || p.service == nil {
		t.Fatalf("kubernetes.yaml lacks an object: %+v", p)
	}
	return p
}

// The manifests fit together: the RBAC grants the Deployment's service
// account what discovery needs, the ConfigMap holds a configuration vigil
// accepts and mounts where the container reads it (as a directory, so edits
// arrive through the symlink swap), and the probes ask vigil's own gRPC
// health on a port a grpc listener serves.
func TestManifests(t *testing.T) {
	p := parse(t)
	ns := p.sa.Namespace
	for _, o := range []metav1.Object{p.role, p.binding, p.configMap, p.deployment, p.service} {
		if o.GetNamespace() != ns {
			t.Errorf("%s is in namespace %q, the service account in %q", o.GetName(), o.GetNamespace(), ns)
		}
	}

	rule := func(verb string) bool {
		for _, r := range p.role.Rules {
			if slices.Contains(r.APIGroups, "discovery.k8s.io") && slices.Contains(r.Resources, "endpointslices") && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, verb := range []string{"get", "list", "watch"} {
		if !rule(verb) {
			t.Errorf("the Role does not allow %s on endpointslices", verb)
		}
	}
	if p.binding.RoleRef.Name != p.role.Name || len(p.binding.Subjects) != 1 ||
		p.binding.Subjects[0].Kind != rbacv1.ServiceAccountKind || p.binding.Subjects[0].Name != p.sa.Name || p.binding.Subjects[0].Namespace != ns {
		t.Errorf("the RoleBinding does not bind the Role to the service account: %+v", p.binding)
	}

	pod := p.deployment.Spec.Template.Spec
	if pod.ServiceAccountName != p.sa.Name {
		t.Errorf("the pod runs as %q, not the service account %q", pod.ServiceAccountName, p.sa.Name)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 >= len(c.Args) {
		t.Fatalf("args %v name no --config", c.Args)
	}
	configPath := c.Args[i+1]
	var mount *corev1.VolumeMount
	for j := range c.VolumeMounts {
		if m := &c.VolumeMounts[j]; m.MountPath+"/config.yaml" == configPath {
			mount = m
		}
	}
	if mount == nil || mount.SubPath != "" {
		t.Fatalf("%s is not in a directory mount of the ConfigMap (a subPath mount never sees edits): %+v", configPath, c.VolumeMounts)
	}
	var fromConfigMap bool
	for _, v := range pod.Volumes {
		fromConfigMap = fromConfigMap || v.Name == mount.Name && v.ConfigMap != nil && v.ConfigMap.Name == p.configMap.Name
	}
	if !fromConfigMap {
		t.Errorf("volume %s is not the ConfigMap %s", mount.Name, p.configMap.Name)
	}

	cfg, err := config.Parse(configPath, []byte(p.configMap.Data["config.yaml"]))
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml:\n%v", err)
	}
	var kube *discovery.Spec
	for _, cl := range cfg.Clusters {
		if cl.Discovery != nil && cl.Discovery.Kind == discovery.KindKubernetes {
			kube = cl.Discovery
		}
	}
	if kube == nil || kube.Kubernetes.Kubeconfig != "" || kube.Kubernetes.Namespace != ns {
		t.Errorf("no in-cluster kubernetes discovery in namespace %s: %+v", ns, kube)
	}

	grpcPorts := map[int32]bool{}
	for _, l := range cfg.Listeners {
		_, port, _ := net.SplitHostPort(l.Address)
		n, _ := strconv.Atoi(port)
		grpcPorts[int32(n)] = l.Protocol == config.ProtocolGRPC
	}
	for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.GRPC == nil {
			t.Errorf("no %s grpc probe", name)
			continue
		}
		if !grpcPorts[probe.GRPC.Port] {
			t.Errorf("the %s probe asks port %d, where no grpc listener is", name, probe.GRPC.Port)
		}
		if probe.GRPC.Service != nil && *probe.GRPC.Service != "" {
			t.Errorf("the %s probe asks service %q, not vigil's own \"\"", name, *probe.GRPC.Service)
		}
	}
	if grace := pod.TerminationGracePeriodSeconds; grace == nil || time.Duration(*grace)*time.Second <= cfg.Shutdown.DrainDelay+cfg.Shutdown.Timeout {
		t.Errorf("terminationGracePeriodSeconds %v does not cover drain_delay + timeout (%v)", grace, cfg.Shutdown.DrainDelay+cfg.Shutdown.Timeout)
	}
}

// The API server accepts the manifests, and the RBAC they create lets the
// service account read EndpointSlices and nothing more.
func TestManifestsApply(t *testing.T) {
	c := kubetest.Shared(t)
	p := parse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := p.sa.Namespace
	if _, err := c.Admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	create := []func() error{
		func() error {
			_, err := c.Admin.CoreV1().ServiceAccounts(ns).Create(ctx, p.sa, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Admin.RbacV1().Roles(ns).Create(ctx, p.role, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Admin.RbacV1().RoleBindings(ns).Create(ctx, p.binding, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Admin.CoreV1().ConfigMaps(ns).Create(ctx, p.configMap, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Admin.AppsV1().Deployments(ns).Create(ctx, p.deployment, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := c.Admin.CoreV1().Services(ns).Create(ctx, p.service, metav1.CreateOptions{})
			return err
		},
	}
	for i, f := range create {
		if err := f(); err != nil {
			t.Fatalf("apply object %d: %v", i+1, err)
		}
	}
	user := "system:serviceaccount:" + ns + ":" + p.sa.Name
	for _, tt := range []struct {
		verb, group, resource string
		allowed               bool
	}{
		{"list", "discovery.k8s.io", "endpointslices", true},
		{"watch", "discovery.k8s.io", "endpointslices", true},
		{"get", "discovery.k8s.io", "endpointslices", true},
		{"create", "discovery.k8s.io", "endpointslices", false},
		{"list", "", "pods", false},
		{"get", "", "secrets", false},
	} {
		review, err := c.Admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:               user,
				Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: tt.verb, Group: tt.group, Resource: tt.resource},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != tt.allowed {
			t.Errorf("%s %s.%s: allowed %v, want %v", tt.verb, tt.resource, tt.group, review.Status.Allowed, tt.allowed)
		}
	}
}
