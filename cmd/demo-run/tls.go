package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// tlsDemo is what `make run-tls` adds to the demo: certificates generated
// at start (nothing secret is shipped) and a copy of the configuration
// with TLS on the grpc listener and mTLS on the tcp one.
type tlsDemo struct {
	dir                string
	config             string // the configuration with tls sections
	ca                 string
	cert, key          string // vigil's
	clientCert, client string // the demo clients' (mTLS)
}

// newTLSDemo generates a CA, a certificate for vigil's listeners
// (localhost, 127.0.0.1) and a client certificate into dir, and writes
// there a copy of the configuration at config whose grpc listeners get
// `tls` and whose tcp listeners get `tls` with `client_ca_file`.
func newTLSDemo(dir, config string) (*tlsDemo, error) {
	ca, err := certgen.NewCA("vigil demo CA")
	if err != nil {
		return nil, err
	}
	d := &tlsDemo{dir: dir}
	if d.ca, err = ca.Write(dir, "ca"); err != nil {
		return nil, err
	}
	srv, err := ca.Issue(certgen.Options{Names: []string{"localhost", "127.0.0.1"}})
	if err != nil {
		return nil, err
	}
	if d.cert, d.key, err = srv.Write(dir, "vigil"); err != nil {
		return nil, err
	}
	cli, err := ca.Issue(certgen.Options{Names: []string{"demo-client"}})
	if err != nil {
		return nil, err
	}
	if d.clientCert, d.client, err = cli.Write(dir, "client"); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(config)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", config, err)
	}
	listeners := lookup(doc.Content[0], "listeners")
	if listeners == nil || listeners.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%s: no listeners to put TLS on", config)
	}
	for _, l := range listeners.Content {
		tls := []string{"cert_file", d.cert, "key_file", d.key}
		if p := lookup(l, "protocol"); p != nil && p.Value == "tcp" {
			tls = append(tls, "client_ca_file", d.ca)
		}
		m := &yaml.Node{Kind: yaml.MappingNode}
		for _, s := range tls {
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: s})
		}
		l.Content = append(l.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "tls"}, m)
	}
	var out bytes.Buffer
	out.WriteString("# Written by demo-run -tls from " + config + ": the same, with TLS.\n")
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	d.config = filepath.Join(dir, "vigil-tls.yaml")
	return d, os.WriteFile(d.config, out.Bytes(), 0o644)
}

// lookup returns the value of key in mapping m, or nil.
func lookup(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// clientArgs are the demo client's TLS flags for a listener (mode grpc or
// tcp).
func (d *tlsDemo) clientArgs(mode string) []string {
	args := []string{"-tls-ca", d.ca, "-tls-server-name", "localhost"}
	if mode == "tcp" {
		args = append(args, "-tls-cert", d.clientCert, "-tls-key", d.client)
	}
	return args
}
