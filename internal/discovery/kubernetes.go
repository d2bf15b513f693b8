package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Kubernetes client settings.
const (
	// kubeSetupRetry is how long after a failed set-up (in-cluster
	// configuration missing, kubeconfig unreadable) it is tried again.
	kubeSetupRetry = 5 * time.Second
	// syncPoll is how often a starting informer is checked for its first
	// complete list: client-go offers no notification of it.
	syncPoll = 10 * time.Millisecond
)

// kubeScheme knows only the EndpointSlice types: a client built on it does
// not link every Kubernetes API group into vigil, as client-go's generated
// clientset would.
var kubeScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := discoveryv1.AddToScheme(s); err != nil {
		panic(fmt.Sprintf("discovery: register EndpointSlice types: %v", err))
	}
	return s
}()

// kubeRESTConfig is the client configuration of k: in-cluster when its
// kubeconfig is "", else from that file.
func kubeRESTConfig(k Kubernetes) (*rest.Config, error) {
	if k.Kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration: %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", k.Kubeconfig, err)
	}
	return cfg, nil
}

// CheckKubeconfig reports whether path is a kubeconfig file vigil can use:
// readable, valid, with a current context that names a server.
func CheckKubeconfig(path string) error {
	_, err := clientcmd.BuildConfigFromFlags("", path)
	return err
}

// sliceClient lists and watches the EndpointSlices of one Service.
type sliceClient struct {
	rest     *rest.RESTClient
	http     *http.Client
	target   Kubernetes
	selector string
}

func newSliceClient(k Kubernetes) (*sliceClient, error) {
	cfg, err := kubeRESTConfig(k)
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	gv := discoveryv1.SchemeGroupVersion
	cfg.GroupVersion = &gv
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(kubeScheme).WithoutConversion()
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	cfg.UserAgent = "vigil"
	// A dialer of our own keeps client-go from sharing a cached transport
	// across clients: this client's connections are its own to close.
	cfg.Dial = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	rc, err := rest.RESTClientForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &sliceClient{
		rest:     rc,
		http:     hc,
		target:   k,
		selector: discoveryv1.LabelServiceName + "=" + k.Service,
	}, nil
}

func (c *sliceClient) list(ctx context.Context, opts metav1.ListOptions) (*discoveryv1.EndpointSliceList, error) {
	opts.LabelSelector = c.selector
	var list discoveryv1.EndpointSliceList
	err := c.rest.Get().Namespace(c.target.Namespace).Resource("endpointslices").
		VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(&list)
	if err != nil {
		return nil, fmt.Errorf("list endpointslices of service %s/%s: %w", c.target.Namespace, c.target.Service, shortURLError(err))
	}
	return &list, nil
}

func (c *sliceClient) watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	opts.LabelSelector = c.selector
	opts.Watch = true
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	w, err := c.rest.Get().Namespace(c.target.Namespace).Resource("endpointslices").
		VersionedParams(&opts, metav1.ParameterCodec).Timeout(timeout).Watch(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch endpointslices of service %s/%s: %w", c.target.Namespace, c.target.Service, shortURLError(err))
	}
	return w, nil
}

// shortURLError drops the request URL (long, with every list parameter)
// from a transport error, keeping the server's address and the cause.
func shortURLError(err error) error {
	var uerr *url.Error
	if !errors.As(err, &uerr) {
		return err
	}
	var oerr *net.OpError
	if errors.As(uerr.Err, &oerr) {
		return uerr.Err // "dial tcp HOST:PORT: connect: connection refused"
	}
	if u, perr := url.Parse(uerr.URL); perr == nil {
		return fmt.Errorf("%s: %w", u.Host, uerr.Err)
	}
	return err
}

// apiHealth is what the informer's own list and watch calls met last: the
// signal of vigil's for `discovery failed`, since client-go's reflector
// retries quietly while the API server is unreachable.
type apiHealth struct {
	mu     sync.Mutex
	err    error // of the last call; nil after a success
	signal chan struct{}
}

func (h *apiHealth) observe(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return // the informer is stopping: not the API server's fault
	}
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
	notify(h.signal)
}

func (h *apiHealth) lastErr() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// notify wakes whoever waits on c, once however often it is called.
func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// runKubernetes watches the Service's EndpointSlices until ctx ends.
func runKubernetes(ctx context.Context, spec Spec, handle Handler) {
	var tr tracker
	for {
		c, err := newSliceClient(spec.Kubernetes)
		if err == nil {
			c.run(ctx, &tr, handle)
			c.http.CloseIdleConnections()
			return
		}
		for _, ev := range tr.observe(nil, err) {
			handle(ev)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(kubeSetupRetry):
		}
	}
}

// run runs the informer and turns what it sees into events until ctx ends.
func (c *sliceClient) run(ctx context.Context, tr *tracker, handle Handler) {
	health := &apiHealth{signal: make(chan struct{}, 1)}
	changed := make(chan struct{}, 1)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list, err := c.list(ctx, opts)
			health.observe(ctx, err)
			if err != nil {
				return nil, err
			}
			return list, nil
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			w, err := c.watch(ctx, opts)
			health.observe(ctx, err)
			return w, err
		},
	}
	informer := cache.NewSharedIndexInformer(lw, &discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	onChange := func(any) { notify(changed) }
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    onChange,
		UpdateFunc: func(_, _ any) { notify(changed) },
		DeleteFunc: onChange,
	}); err != nil {
		for _, ev := range tr.observe(nil, fmt.Errorf("kubernetes informer: %w", err)) {
			handle(ev)
		}
		return
	}
	informerCtx, stopInformer := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { informer.RunWithContext(informerCtx) })
	defer wg.Wait()
	defer stopInformer()

	poll := time.NewTicker(syncPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-health.signal:
		case <-poll.C:
			if !informer.HasSynced() {
				continue
			}
			poll.Stop() // synced: from now on every change is an event
		}
		if err := health.lastErr(); err != nil {
			for _, ev := range tr.observe(nil, err) {
				handle(ev)
			}
			continue
		}
		if !informer.HasSynced() {
			continue
		}
		set := c.endpoints(informer.GetStore().List())
		for _, ev := range tr.observe(set, nil) {
			handle(ev)
		}
	}
}

// endpoints is the set the slices describe: ready endpoints are candidates,
// serving and terminating ones are draining, others are left out. Slices of
// another Service (which the label selector already excludes), of the FQDN
// address type, or without the wanted port contribute nothing.
func (c *sliceClient) endpoints(objs []any) []Endpoint {
	n := 0
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			n += len(s.Endpoints)
		}
	}
	b := newSetBuilder(n)
	for _, o := range objs {
		s, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || s.Labels[discoveryv1.LabelServiceName] != c.target.Service {
			continue
		}
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port, ok := slicePort(s, c.target)
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			candidate, draining := conditions(e.Conditions)
			if (!candidate && !draining) || len(e.Addresses) == 0 {
				continue
			}
			// Addresses are fungible; kube-proxy, too, uses the first.
			ip, err := netip.ParseAddr(e.Addresses[0])
			if err != nil {
				continue
			}
			b.add(netip.AddrPortFrom(ip, port), 1, !candidate)
		}
	}
	return b.set()
}

// conditions classifies an endpoint by its conditions, with the API's
// meaning of unset ones: ready and serving default to true, terminating to
// false.
func conditions(c discoveryv1.EndpointConditions) (candidate, draining bool) {
	ready := c.Ready == nil || *c.Ready
	serving := c.Serving == nil || *c.Serving
	terminating := c.Terminating != nil && *c.Terminating
	switch {
	case ready && !terminating:
		return true, false
	case serving && terminating:
		return false, true
	}
	return false, false
}

// slicePort finds the TCP port the target asks for in a slice.
func slicePort(s *discoveryv1.EndpointSlice, k Kubernetes) (uint16, bool) {
	for _, p := range s.Ports {
		if p.Port == nil || *p.Port < 1 || *p.Port > 65535 {
			continue
		}
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		name := ""
		if p.Name != nil {
			name = *p.Name
		}
		if k.PortNumber != 0 && *p.Port == k.PortNumber || k.PortNumber == 0 && name == k.PortName {
			return uint16(*p.Port), true
		}
	}
	return 0, false
}
