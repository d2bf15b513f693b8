package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/discovery"
)

// discoveryConfig is a file with one cluster whose body is cluster (indented
// under "  - name: c").
func discoveryConfig(cluster string) []byte {
	return []byte(`listeners:
  - name: l
    address: 127.0.0.1:0
    cluster: c
clusters:
  - name: c
` + cluster)
}

func TestParseDiscovery(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		yaml      string
		want      discovery.Spec
		endpoints int
	}{
		{"dns", `    discovery:
      dns: orders.prod.svc.cluster.local:50051
`, discovery.Spec{Kind: discovery.KindDNS, Name: "orders.prod.svc.cluster.local", Port: 50051, Refresh: 5 * time.Second}, 0},
		{"dns with everything, and listed endpoints", `    endpoints:
      - address: 127.0.0.1:1
    discovery:
      dns: orders.:80
      refresh: 100ms
      resolver: 10.96.0.10:53
`, discovery.Spec{Kind: discovery.KindDNS, Name: "orders.", Port: 80, Refresh: 100 * time.Millisecond, Resolver: "10.96.0.10:53"}, 1},
		{"srv, empty endpoints list", `    endpoints: []
    discovery: {srv: _grpc._tcp.orders.example.com, refresh: 30s, resolver: ""}
`, discovery.Spec{Kind: discovery.KindSRV, Name: "_grpc._tcp.orders.example.com", Refresh: 30 * time.Second}, 0},
		{"kubernetes by name, in-cluster", `    discovery:
      kubernetes:
        service: orders
        port: grpc
`, discovery.Spec{Kind: discovery.KindKubernetes, Refresh: 5 * time.Second, Kubernetes: discovery.Kubernetes{Service: "orders", Namespace: "default", PortName: "grpc"}}, 0},
		{"kubernetes by number, kubeconfig", `    discovery:
      kubernetes:
        service: orders
        namespace: shop-1
        port: 50051
        kubeconfig: ` + kubeconfig + `
`, discovery.Spec{Kind: discovery.KindKubernetes, Refresh: 5 * time.Second, Kubernetes: discovery.Kubernetes{Service: "orders", Namespace: "shop-1", PortNumber: 50051, Kubeconfig: kubeconfig}}, 0},
		{"kubernetes port number as a string", `    discovery: {kubernetes: {service: orders, port: "8080", kubeconfig: ""}}
`, discovery.Spec{Kind: discovery.KindKubernetes, Refresh: 5 * time.Second, Kubernetes: discovery.Kubernetes{Service: "orders", Namespace: "default", PortNumber: 8080}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("t.yaml", discoveryConfig(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Clusters[0]
			if c.Discovery == nil || *c.Discovery != tt.want {
				t.Errorf("discovery = %+v, want %+v", c.Discovery, tt.want)
			}
			if len(c.Endpoints) != tt.endpoints {
				t.Errorf("%d endpoints, want %d", len(c.Endpoints), tt.endpoints)
			}
		})
	}
}

func TestParseDiscoveryErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("{{{"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		yaml string
		want []string // error lines without "t.yaml:"
	}{
		{"both dns and srv", `    discovery:
      dns: orders:80
      srv: _grpc._tcp.orders
`, []string{`9:7: clusters[0].discovery.srv: give one of dns, srv and kubernetes, not both dns and srv`}},
		{"both, and each wrong", `    discovery:
      dns: orders:70000
      kubernetes: {service: orders}
`, []string{
			`8:12: clusters[0].discovery.dns: invalid address "orders:70000": port must be a number from 1 to 65535`,
			`9:7: clusters[0].discovery.kubernetes: give one of dns, srv and kubernetes, not both dns and kubernetes`,
			`9:19: clusters[0].discovery.kubernetes.port: missing required field`,
		}},
		{"no source", `    discovery:
      refresh: 1s
`, []string{`8:7: clusters[0].discovery: needs one of dns, srv or kubernetes`}},
		{"bad names", `    discovery: {dns: "orders..example:80"}
  - name: d
    discovery: {srv: "_grpc._tcp.bad name"}
  - name: e
    discovery: {kubernetes: {service: Orders, namespace: "-x", port: "grpc_port"}}
  - name: f
    discovery: {dns: "10.0.0.1:80"}
  - name: g
    discovery: {srv: "orders.example:80"}
`, []string{
			`7:22: clusters[0].discovery.dns: invalid address "orders..example:80": "orders..example" is not a valid host name`,
			`9:22: clusters[1].discovery.srv: invalid SRV name: "_grpc._tcp.bad name" is not a valid host name`,
			`11:39: clusters[2].discovery.kubernetes.service: invalid Service name "Orders": use lower-case letters, digits and '-'`,
			`11:58: clusters[2].discovery.kubernetes.namespace: invalid namespace "-x": must start and end with a letter or digit`,
			`11:70: clusters[2].discovery.kubernetes.port: invalid port name "grpc_port": use lower-case letters, digits and '-'`,
			`13:22: clusters[3].discovery.dns: "10.0.0.1" is an IP address, nothing to resolve: list it under endpoints`,
			`15:22: clusters[4].discovery.srv: must be a DNS name like _grpc._tcp.orders.example.com, without a port: the SRV records give the ports`,
		}},
		{"ports out of range", `    discovery: {dns: "orders:65536"}
  - name: d
    discovery: {kubernetes: {service: orders, port: 0}}
  - name: e
    discovery: {kubernetes: {service: orders, port: 70000}}
  - name: f
    discovery: {dns: "orders"}
`, []string{
			`7:22: clusters[0].discovery.dns: invalid address "orders:65536": port must be a number from 1 to 65535`,
			`9:53: clusters[1].discovery.kubernetes.port: port out of range: must be from 1 to 65535, not 0`,
			`11:53: clusters[2].discovery.kubernetes.port: port out of range: must be from 1 to 65535, not 70000`,
			`13:22: clusters[3].discovery.dns: invalid address "orders": must be host:port (missing port)`,
		}},
		{"refresh and resolver", `    discovery: {dns: "orders:80", refresh: 50ms, resolver: "10.0.0.1"}
  - name: d
    discovery: {srv: orders, refresh: 0s}
  - name: e
    discovery: {kubernetes: {service: orders, port: grpc}, refresh: 1s, resolver: "10.0.0.1:53"}
`, []string{
			`7:44: clusters[0].discovery.refresh: must be at least 100ms, not 50ms`,
			`7:60: clusters[0].discovery.resolver: invalid address "10.0.0.1": must be host:port (missing port) (the DNS server, like 10.96.0.10:53)`,
			`9:39: clusters[1].discovery.refresh: must be positive, not 0s`,
			`11:60: clusters[2].discovery.refresh: applies to dns and srv only: kubernetes is watched, not polled`,
			`11:73: clusters[2].discovery.resolver: applies to dns and srv only: kubernetes is watched, not polled`,
		}},
		{"kubernetes required fields and kubeconfig", `    discovery:
      kubernetes: {namespace: default}
  - name: d
    discovery:
      kubernetes: {service: orders, port: grpc, kubeconfig: ` + filepath.Join(dir, "missing") + `}
  - name: e
    discovery:
      kubernetes: {service: orders, port: grpc, kubeconfig: ` + garbage + `}
  - name: f
    discovery:
      kubernetes:
  - name: g
    discovery:
      kubernetes: {service: orders, port: grpc, kubeconfig: true}
`, []string{
			`8:19: clusters[0].discovery.kubernetes.service: missing required field (the Service whose EndpointSlices are the endpoints)`,
			`8:19: clusters[0].discovery.kubernetes.port: missing required field (the port's name, like grpc, or its number)`,
			`11:61: clusters[1].discovery.kubernetes.kubeconfig: unusable kubeconfig: stat ` + filepath.Join(dir, "missing") + `: no such file or directory`,
			`14:61: clusters[2].discovery.kubernetes.kubeconfig: unusable kubeconfig: error loading config file "` + garbage + `": yaml: `,
			`17:18: clusters[3].discovery.kubernetes.service: missing required field`,
			`17:18: clusters[3].discovery.kubernetes.port: missing required field`,
			`20:61: clusters[4].discovery.kubernetes.kubeconfig: must be a string, not the boolean true (quote it to use it as text)`,
		}},
		{"unknown fields", `    discovery:
      dns: orders:80
      ttl: 5s
      kubernetes_: x
`, []string{
			`9:7: clusters[0].discovery.ttl: unknown field "ttl"`,
			`10:7: clusters[0].discovery.kubernetes_: unknown field "kubernetes_"; did you mean "kubernetes"?`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", discoveryConfig(tt.yaml))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("err = %v, want an ErrorList", err)
			}
			var got []string
			for _, e := range list {
				got = append(got, strings.TrimPrefix(e.Error(), "t.yaml:"))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\n got %s\nwant %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}
