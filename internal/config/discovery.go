package config

import (
	"net/netip"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/vigil-proxy/vigil/internal/discovery"
)

var (
	discoveryKeys  = []string{"dns", "srv", "kubernetes", "refresh", "resolver"}
	kubernetesKeys = []string{"service", "namespace", "port", "kubeconfig"}
	// discoverySources are the keys that name a source, in the order
	// messages list them.
	discoverySources = []string{"dns", "srv", "kubernetes"}
)

// decodeDiscovery reads a cluster's discovery section. It returns nil when
// the section is absent or too broken to name a source (the errors say why).
func (w *walker) decodeDiscovery(raw *yaml.Node, path string) *discovery.Spec {
	f, m, ok := w.mapping(raw, path, discoveryKeys)
	if !ok {
		return nil
	}
	spec := &discovery.Spec{Refresh: discovery.DefaultRefresh}
	var given []string
	for _, k := range discoverySources {
		if f.has(k) {
			given = append(given, k)
		}
	}
	if len(given) == 0 {
		w.errs.at(m, path, "needs one of dns, srv or kubernetes")
		return nil
	}
	for _, k := range given[1:] {
		w.errs.at(keyNode(m, k), join(path, k), "give one of dns, srv and kubernetes, not both %s and %s", given[0], k)
	}
	valid := len(given) == 1
	// Every source given is checked, so that all its errors show at once.
	for i := len(given) - 1; i >= 0; i-- {
		ok := true
		switch given[i] {
		case "dns":
			spec.Kind = discovery.KindDNS
			spec.Name, spec.Port, ok = w.discoveryHostPort(f.value("dns"), join(path, "dns"))
		case "srv":
			spec.Kind = discovery.KindSRV
			spec.Name, ok = w.discoveryName(f.value("srv"), join(path, "srv"))
		case "kubernetes":
			spec.Kind = discovery.KindKubernetes
			spec.Kubernetes, ok = w.decodeKubernetes(f.value("kubernetes"), join(path, "kubernetes"))
		}
		valid = valid && ok
	}
	for _, k := range []string{"refresh", "resolver"} {
		if spec.Kind == discovery.KindKubernetes && f.has(k) {
			w.errs.at(keyNode(m, k), join(path, k), "applies to dns and srv only: kubernetes is watched, not polled")
			valid = false
		}
	}
	if v := f.value("refresh"); v != nil && spec.Kind != discovery.KindKubernetes {
		if d, ok := w.duration(v, join(path, "refresh"), false); !ok {
			valid = false
		} else if d < discovery.MinRefresh {
			w.errs.at(resolve(v), join(path, "refresh"), "must be at least %v, not %s", discovery.MinRefresh, clean(resolve(v).Value))
			valid = false
		} else {
			spec.Refresh = d
		}
	}
	if v := f.value("resolver"); v != nil && spec.Kind != discovery.KindKubernetes {
		s, n, ok := w.str(v, join(path, "resolver"))
		switch {
		case !ok:
			valid = false
		case s == "":
		default:
			if err := checkAddress(s, endpointAddress); err != nil {
				w.errs.at(n, join(path, "resolver"), "%v (the DNS server, like 10.96.0.10:53)", err)
				valid = false
			}
			spec.Resolver = s
		}
	}
	if !valid {
		return nil
	}
	return spec
}

// discoveryHostPort reads dns: host:port, a name to resolve and the port of
// its addresses.
func (w *walker) discoveryHostPort(raw *yaml.Node, path string) (string, uint16, bool) {
	s, n, ok := w.str(raw, path)
	if !ok {
		return "", 0, false
	}
	if err := checkAddress(s, endpointAddress); err != nil {
		w.errs.at(n, path, "%v", err)
		return "", 0, false
	}
	host, port, _ := splitHostPort(s)
	if _, err := netip.ParseAddr(host); err == nil {
		w.errs.at(n, path, "%s is an IP address, nothing to resolve: list it under endpoints", quote(host))
		return "", 0, false
	}
	p, _ := strconv.Atoi(port)
	return host, uint16(p), true
}

// discoveryName reads srv: a DNS name.
func (w *walker) discoveryName(raw *yaml.Node, path string) (string, bool) {
	s, n, ok := w.str(raw, path)
	if !ok {
		return "", false
	}
	if _, _, err := splitHostPort(s); err == nil && !strings.HasPrefix(s, "[") {
		w.errs.at(n, path, "must be a DNS name like _grpc._tcp.orders.example.com, without a port: the SRV records give the ports")
		return "", false
	}
	if _, err := netip.ParseAddr(s); err == nil {
		w.errs.at(n, path, "%s is an IP address: srv takes the name of SRV records", quote(s))
		return "", false
	}
	if err := checkHost(s); err != nil {
		w.errs.at(n, path, "invalid SRV name: %v", err)
		return "", false
	}
	return s, true
}

func (w *walker) decodeKubernetes(raw *yaml.Node, path string) (discovery.Kubernetes, bool) {
	k := discovery.Kubernetes{Namespace: discovery.DefaultNamespace}
	f, m, ok := w.mapping(raw, path, kubernetesKeys)
	if !ok {
		return k, false
	}
	valid := true
	if w.require(&f, m, path, "service", " (the Service whose EndpointSlices are the endpoints)") {
		s, n, ok := w.str(f.value("service"), join(path, "service"))
		if ok {
			if err := checkLabel(s, true); err != nil {
				w.errs.at(n, join(path, "service"), "invalid Service name %s: %v", quote(s), err)
				ok = false
			}
		}
		k.Service, valid = s, valid && ok
	} else {
		valid = false
	}
	if v := f.value("namespace"); v != nil {
		s, n, ok := w.str(v, join(path, "namespace"))
		if ok {
			if err := checkLabel(s, false); err != nil {
				w.errs.at(n, join(path, "namespace"), "invalid namespace %s: %v", quote(s), err)
				ok = false
			}
		}
		k.Namespace, valid = s, valid && ok
	}
	if w.require(&f, m, path, "port", " (the port's name, like grpc, or its number)") {
		var ok bool
		k.PortName, k.PortNumber, ok = w.kubernetesPort(f.value("port"), join(path, "port"))
		valid = valid && ok
	} else {
		valid = false
	}
	if v := f.value("kubeconfig"); v != nil {
		s, n, ok := w.str(v, join(path, "kubeconfig"))
		if ok && s != "" {
			if err := discovery.CheckKubeconfig(s); err != nil {
				w.errs.at(n, join(path, "kubeconfig"), "unusable kubeconfig: %v", err)
				ok = false
			}
		}
		k.Kubeconfig, valid = s, valid && ok
	}
	return k, valid
}

// kubernetesPort reads a port name (an IANA service name, as Service ports
// are named) or number.
func (w *walker) kubernetesPort(raw *yaml.Node, path string) (string, int32, bool) {
	n, ok := w.scalar(raw, path, "a port name or number")
	if !ok {
		return "", 0, false
	}
	if n.ShortTag() == "!!int" || n.ShortTag() == "!!str" && n.Value != "" && allDigits(n.Value) {
		p, err := strconv.Atoi(n.Value)
		if err != nil || p < 1 || p > 65535 {
			w.errs.at(n, path, "port out of range: must be from 1 to 65535, not %s", clean(n.Value))
			return "", 0, false
		}
		return "", int32(p), true
	}
	if n.ShortTag() != "!!str" {
		w.errs.at(n, path, "must be a port name or number, not %s", describe(n))
		return "", 0, false
	}
	if err := checkPortName(n.Value); err != nil {
		w.errs.at(n, path, "invalid port name %s: %v", quote(n.Value), err)
		return "", 0, false
	}
	return n.Value, 0, true
}

// keyNode is the key node of k in mapping m (for errors about a key), or m.
func keyNode(m *yaml.Node, k string) *yaml.Node {
	if m != nil && m.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == k {
				return m.Content[i]
			}
		}
	}
	return m
}
