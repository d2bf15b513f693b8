package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/certgen"
)

// startTLSEcho is a Go crypto/tls server on loopback with leaf's
// certificate that echoes each connection, prefixed with its id.
func startTLSEcho(t *testing.T, id string, leaf *certgen.Leaf) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.WriteString(c, id+":"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			})
		}
	})
	return ln.Addr().String()
}

// byteConn writes one byte per write (with TCP_NODELAY, one segment
// each): a ClientHello split over many TCP segments.
type byteConn struct{ net.Conn }

func (c byteConn) Write(b []byte) (int, error) {
	for i := range b {
		if _, err := c.Conn.Write(b[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(b), nil
}

// SNI passthrough: vigil reads the ClientHello without terminating TLS,
// routes by its server name, and the client talks TLS to the backend
// itself (its certificate is the backend's, byte for byte); unmatched
// names go to the listener's cluster or are closed; garbage and a hello
// over the bound are closed; a hello split over many segments routes.
func TestSNIPassthrough(t *testing.T) {
	pki := newTestPKI(t)
	_, _, leafA := pki.issue("a", certgen.Options{Names: []string{"a.example.com"}})
	_, _, leafB := pki.issue("b", certgen.Options{Names: []string{"*.b.example.com"}})
	a, b := startTLSEcho(t, "A", leafA), startTLSEcho(t, "B", leafB)
	logPath := filepath.Join(t.TempDir(), "tcp.log")
	health := "mode: tcp\ninterval: 100ms\ntimeout: 100ms"
	routes := "routes: [{name: a, sni: a.example.com, cluster: ca}, {sni: \"*.b.example.com\", cluster: cb}]"
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{
			{Name: "sni", Protocol: "tcp", Extra: routes + "\naccess_log: {path: " + logPath + "}"},
			{Name: "sni-default", Protocol: "tcp", Cluster: "ca", Extra: routes},
		},
		Clusters: []yamlCluster{
			{Name: "ca", Endpoints: []string{a}, Health: health},
			{Name: "cb", Endpoints: []string{b}, Health: health},
		},
	}.String())
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")

	// talk makes a TLS connection for sni through addr and returns the
	// backend's id and certificate, or the error.
	talk := func(addr, sni string, split bool) (string, *x509.Certificate, error) {
		t.Helper()
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
		var nc net.Conn = raw
		if split {
			nc = byteConn{raw}
		}
		c := tls.Client(nc, &tls.Config{ServerName: sni, RootCAs: pki.pool(), InsecureSkipVerify: sni == "unknown.example.org"})
		if err := c.Handshake(); err != nil {
			return "", nil, err
		}
		msg := strings.Repeat("x", 5000)
		if _, err := io.WriteString(c, msg); err != nil {
			return "", nil, err
		}
		got := make([]byte, 2+len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return "", nil, err
		}
		if string(got[2:]) != msg {
			t.Fatalf("echo through %s for %s garbled", addr, sni)
		}
		return string(got[:1]), c.ConnectionState().PeerCertificates[0], nil
	}

	for _, tc := range []struct {
		addr, sni, want string
		leaf            *certgen.Leaf
		split           bool
	}{
		{v.listener("sni"), "a.example.com", "A", leafA, false},
		{v.listener("sni"), "x.b.example.com", "B", leafB, false},
		{v.listener("sni"), "A.Example.COM", "A", leafA, false},
		{v.listener("sni"), "y.b.example.com", "B", leafB, true},
		{v.listener("sni-default"), "unknown.example.org", "A", leafA, false},
	} {
		id, cert, err := talk(tc.addr, tc.sni, tc.split)
		if err != nil {
			t.Fatalf("%s: %v", tc.sni, err)
		}
		if id != tc.want || !bytes.Equal(cert.Raw, tc.leaf.Cert.Raw) {
			t.Errorf("%s (split %v): backend %s, certificate %v; want %s and its own certificate", tc.sni, tc.split, id, cert.DNSNames, tc.want)
		}
	}
	// No route and no default: closed before any TLS.
	if _, _, err := talk(v.listener("sni"), "unknown.example.org", false); err == nil {
		t.Error("an unmatched server name was forwarded by a listener without a cluster")
	}
	// Garbage, and a hello over the bound: closed.
	big := append([]byte{22, 3, 1, 0x40, 0, 1, 0, 0x50, 0}, make([]byte, 16<<10-4)...)
	for name, payload := range map[string][]byte{"garbage": []byte("GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n"), "too large": big} {
		c, err := net.Dial("tcp", v.listener("sni"))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write(payload)
		n, err := io.Copy(io.Discard, c)
		c.Close()
		if n != 0 || err != nil && !strings.Contains(err.Error(), "reset") {
			t.Errorf("%s: read %d bytes, %v; want the connection closed", name, n, err)
		}
	}

	// The access log names the route, the cluster and the server name.
	var lines []string
	eventually(t, 10*time.Second, func() bool {
		data, _ := os.ReadFile(logPath)
		lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		return len(lines) >= 7
	}, "7 tcp records")
	for i, want := range []string{`"route":"a","cluster":"ca"`, `"route":"1","cluster":"cb"`, `"route":"a"`, `"route":"1"`} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("record %d lacks %s: %s", i, want, lines[i])
		}
	}
	for i, sni := range []string{"a.example.com", "x.b.example.com", "A.Example.COM", "y.b.example.com", "unknown.example.org"} {
		if !strings.Contains(lines[i], `"sni":"`+sni+`"`) {
			t.Errorf("record %d lacks sni %s: %s", i, sni, lines[i])
		}
	}
	if !strings.Contains(lines[4], `"cluster":"","endpoint":""`) || !strings.Contains(lines[4], `"result":"no_endpoint"`) {
		t.Errorf("the unmatched connection's record: %s", lines[4])
	}
}
