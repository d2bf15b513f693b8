package integration

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
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

// startIDEcho is a server on loopback that echoes each connection,
// prefixed with its id: over Go crypto/tls with leaf's certificate, or
// plaintext when leaf is nil.
func startIDEcho(t *testing.T, id string, leaf *certgen.Leaf) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if leaf != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{leaf.TLS()}})
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
	a, b := startIDEcho(t, "A", leafA), startIDEcho(t, "B", leafB)
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

// SNI routing on a tcp listener with tls: vigil terminates the handshake
// with the certificate chosen by the client's server name, routes by that
// name, and forwards the plaintext to plaintext backends; an unmatched name
// and a client without SNI go to the listener's cluster, or are closed
// after the handshake on a listener without one.
func TestSNITerminated(t *testing.T) {
	pki := newTestPKI(t)
	defCert, defKey, def := pki.issue("default", certgen.Options{Names: []string{"default.example.org"}})
	aCert, aKey, leafA := pki.issue("a", certgen.Options{Names: []string{"a.example.com"}})
	wildCert, wildKey, wild := pki.issue("wild", certgen.Options{Names: []string{"*.example.com"}})
	a, b, d := startIDEcho(t, "A", nil), startIDEcho(t, "B", nil), startIDEcho(t, "D", nil)
	logPath := filepath.Join(t.TempDir(), "tcp.log")
	// Certificates by SNI (the first that matches, a.example.com before
	// the wildcard); the first is the default for unknown names and
	// clients without SNI.
	extra := fmt.Sprintf("tls: {certificates: [{cert_file: %s, key_file: %s}, {cert_file: %s, key_file: %s}, {cert_file: %s, key_file: %s}]}\n",
		defCert, defKey, aCert, aKey, wildCert, wildKey) +
		"routes: [{name: a, sni: a.example.com, cluster: ca}, {name: b, sni: b.example.com, cluster: cb}]\n" +
		"access_log: {path: " + logPath + "}"
	health := "mode: tcp\ninterval: 100ms\ntimeout: 1s"
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{
			{Name: "sni", Protocol: "tcp", Cluster: "cd", Extra: extra},
			{Name: "sni-no-default", Protocol: "tcp", Extra: extra},
		},
		Clusters: []yamlCluster{
			{Name: "ca", Endpoints: []string{a}, Health: health},
			{Name: "cb", Endpoints: []string{b}, Health: health},
			{Name: "cd", Endpoints: []string{d}, Health: health},
		},
	}.String())
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")

	// talk makes a TLS connection to addr with server name sni (none when
	// ""), and returns the certificate vigil presented and the id of the
	// backend that echoed through it, or the error.
	talk := func(addr, sni string) (string, *x509.Certificate, error) {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: sni, RootCAs: pki.pool(), InsecureSkipVerify: sni == "" || sni == "other.example.org"})
		if err != nil {
			return "", nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		cert := c.ConnectionState().PeerCertificates[0]
		msg := strings.Repeat("y", 5000)
		if _, err := io.WriteString(c, msg); err != nil {
			return "", cert, err
		}
		got := make([]byte, 2+len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return "", cert, err
		}
		if string(got[2:]) != msg {
			t.Fatalf("echo through %s for %q garbled", addr, sni)
		}
		return string(got[:1]), cert, nil
	}

	for _, tc := range []struct {
		sni, want string
		leaf      *certgen.Leaf
	}{
		{"a.example.com", "A", leafA},
		{"b.example.com", "B", wild},
		{"B.Example.COM", "B", wild},
		{"c.example.com", "D", wild},    // a certificate, no route
		{"other.example.org", "D", def}, // neither
		{"", "D", def},                  // no SNI
	} {
		id, cert, err := talk(v.listener("sni"), tc.sni)
		if err != nil {
			t.Fatalf("sni %q: %v", tc.sni, err)
		}
		if id != tc.want || !bytes.Equal(cert.Raw, tc.leaf.Cert.Raw) {
			t.Errorf("sni %q: backend %s, certificate for %v; want %s and the certificate for %v", tc.sni, id, cert.DNSNames, tc.want, tc.leaf.Cert.DNSNames)
		}
	}
	// Without a default, the routed names still route; the others are
	// closed once the handshake is done, before any byte of a backend.
	if id, _, err := talk(v.listener("sni-no-default"), "b.example.com"); err != nil || id != "B" {
		t.Errorf("no default, b.example.com: backend %q, %v; want B", id, err)
	}
	for _, sni := range []string{"c.example.com", ""} {
		if id, _, err := talk(v.listener("sni-no-default"), sni); err == nil {
			t.Errorf("no default, sni %q: reached backend %s; want the connection closed", sni, id)
		}
	}

	// The access log: route, cluster, endpoint and sni of each connection;
	// no_endpoint for the closed ones.
	type key struct{ listener, sni string }
	want := map[key][4]string{ // route, cluster, endpoint, result
		{"sni", "a.example.com"}:            {"a", "ca", a, "closed"},
		{"sni", "b.example.com"}:            {"b", "cb", b, "closed"},
		{"sni", "B.Example.COM"}:            {"b", "cb", b, "closed"},
		{"sni", "c.example.com"}:            {"", "cd", d, "closed"},
		{"sni", "other.example.org"}:        {"", "cd", d, "closed"},
		{"sni", ""}:                         {"", "cd", d, "closed"},
		{"sni-no-default", "b.example.com"}: {"b", "cb", b, "closed"},
		{"sni-no-default", "c.example.com"}: {"", "", "", "no_endpoint"},
		{"sni-no-default", ""}:              {"", "", "", "no_endpoint"},
	}
	var recs []map[string]any
	eventually(t, 10*time.Second, func() bool {
		recs = accessRecords(t, logPath)
		return len(recs) >= len(want)
	}, "%d tcp records", len(want))
	for _, r := range recs {
		k := key{fmt.Sprint(r["listener"]), fmt.Sprint(r["sni"])}
		w, ok := want[k]
		if !ok {
			t.Errorf("unexpected record: %v", r)
			continue
		}
		delete(want, k)
		if got := [4]string{fmt.Sprint(r["route"]), fmt.Sprint(r["cluster"]), fmt.Sprint(r["endpoint"]), fmt.Sprint(r["result"])}; got != w {
			t.Errorf("%v: route, cluster, endpoint, result %q; want %q", k, got, w)
		}
	}
	for k := range want {
		t.Errorf("no record for %v", k)
	}
}
