package kubetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Static tokens of the API server's users.
const (
	// AdminUser is in system:masters: allowed everything.
	AdminUser = "admin"
	// VigilUser is what the tests run vigil as: allowed only what the RBAC
	// manifests (or a test) grant it.
	VigilUser = "vigil"
	// NobodyUser is allowed nothing.
	NobodyUser = "nobody"
)

// Cluster is one etcd and one kube-apiserver.
type Cluster struct {
	// URL is the API server's https://127.0.0.1:port.
	URL string
	// CAFile verifies the API server's certificate.
	CAFile string
	// Admin is a client allowed everything.
	Admin *kubernetes.Clientset

	dir       string
	bins      string
	etcdURL   string
	port      int
	etcd      *process
	apiserver *process
	tokens    map[string]string // user -> token
}

// Binaries returns the directory that holds etcd and kube-apiserver, as
// .ci/install-kube --check reports it.
func Binaries() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	out, err := exec.Command(filepath.Join(root, ".ci", "install-kube"), "--check").Output()
	if err != nil {
		return "", errors.New("kube-apiserver and etcd are not built: run .ci/install-kube (about 8 minutes cold), or make test-kube")
	}
	return strings.TrimSpace(string(out)), nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, ".ci", "install-kube")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no .ci/install-kube above the working directory")
		}
		dir = parent
	}
}

var shared struct {
	mu      sync.Mutex
	cluster *Cluster
	err     error
}

// Shared returns the cluster the tests of this binary share, starting it
// on first use; Main stops it. Tests keep apart by namespace (Namespace).
func Shared(t testing.TB) *Cluster {
	t.Helper()
	Require(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster == nil && shared.err == nil {
		shared.cluster, shared.err = start()
	}
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.cluster
}

// StopShared stops the shared cluster, if one was started.
func StopShared() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.cluster != nil {
		shared.cluster.stop()
		shared.cluster = nil
	}
}

// Start starts a cluster of the test's own (for tests that stop the API
// server); cleanup stops it.
func Start(t testing.TB) *Cluster {
	t.Helper()
	Require(t)
	c, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

func start() (c *Cluster, err error) {
	bins, err := Binaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kubetest")
	if err != nil {
		return nil, err
	}
	c = &Cluster{dir: dir, bins: bins, tokens: map[string]string{}}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	if err := c.writeCredentials(); err != nil {
		return nil, err
	}
	if err := c.startEtcd(); err != nil {
		return nil, err
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	c.URL = "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
	c.CAFile = filepath.Join(dir, "certs", "apiserver.crt")
	if err := c.startAPIServer(); err != nil {
		return nil, err
	}
	cfg := c.RESTConfig(AdminUser)
	if c.Admin, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cluster) writeCredentials() error {
	var tokens strings.Builder
	for i, u := range []struct{ name, groups string }{
		{AdminUser, "system:masters"},
		{VigilUser, ""},
		{NobodyUser, ""},
	} {
		tok := rand.Text()
		c.tokens[u.name] = tok
		fmt.Fprintf(&tokens, "%s,%s,%d,%q\n", tok, u.name, i+1, u.groups)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "tokens.csv"), []byte(tokens.String()), 0o600); err != nil {
		return err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

func (c *Cluster) startEtcd() error {
	client, err := freePort()
	if err != nil {
		return err
	}
	peer, err := freePort()
	if err != nil {
		return err
	}
	c.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", client)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
	c.etcd, err = startProcess(filepath.Join(c.dir, "etcd.log"), filepath.Join(c.bins, "etcd"),
		"--data-dir", filepath.Join(c.dir, "etcd"),
		"--listen-client-urls", c.etcdURL, "--advertise-client-urls", c.etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return err
	}
	return c.etcd.waitReady(30*time.Second, func() bool {
		resp, err := http.Get(c.etcdURL + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (c *Cluster) startAPIServer() error {
	args := []string{
		"--etcd-servers", c.etcdURL,
		"--bind-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(c.port),
		"--cert-dir", filepath.Join(c.dir, "certs"),
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--service-account-key-file", filepath.Join(c.dir, "sa.pub"),
		"--service-account-signing-key-file", filepath.Join(c.dir, "sa.key"),
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--token-auth-file", filepath.Join(c.dir, "tokens.csv"),
		"--authorization-mode", "RBAC",
		"--endpoint-reconciler-type", "none",
	}
	if InNamespace() {
		// The namespace has no default route to pick an address from.
		args = append(args, "--advertise-address", "198.18.0.1")
	}
	var err error
	c.apiserver, err = startProcess(filepath.Join(c.dir, "apiserver.log"), filepath.Join(c.bins, "kube-apiserver"), args...)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	return c.apiserver.waitReady(60*time.Second, func() bool {
		req, _ := http.NewRequest(http.MethodGet, c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.tokens[AdminUser])
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// StopAPIServer kills the API server (etcd keeps the data).
func (c *Cluster) StopAPIServer(t testing.TB) {
	t.Helper()
	c.apiserver.stop()
}

// StartAPIServer starts the API server again on the same address.
func (c *Cluster) StartAPIServer(t testing.TB) {
	t.Helper()
	if err := c.startAPIServer(); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) stop() {
	if c.apiserver != nil {
		c.apiserver.stop()
	}
	if c.etcd != nil {
		c.etcd.stop()
	}
	if c.Admin != nil {
		c.Admin.DiscoveryClient.RESTClient().(*rest.RESTClient).Client.CloseIdleConnections()
	}
	os.RemoveAll(c.dir)
}

// RESTConfig is a client configuration for user.
func (c *Cluster) RESTConfig(user string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     c.tokens[user],
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CAFile},
		// An own dialer: no transport shared through client-go's cache,
		// so nothing outlives the cluster.
		Dial: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		// Tests write fast; client-go's default of 5 requests/s would
		// make them wait on themselves.
		QPS:   1000,
		Burst: 1000,
	}
}

// Token is user's bearer token.
func (c *Cluster) Token(user string) string { return c.tokens[user] }

// WriteKubeconfig writes a kubeconfig for user into dir and returns its path.
func (c *Cluster) WriteKubeconfig(t testing.TB, dir, user string) string {
	t.Helper()
	path := filepath.Join(dir, "kubeconfig-"+user)
	conf := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: test
  context:
    cluster: test
    user: %s
current-context: test
`, c.URL, c.CAFile, user, c.tokens[user], user)
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is one server process of the cluster.
type process struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startProcess(logFile, bin string, args ...string) (*process, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := &process{cmd: exec.Command(bin, args...), log: logFile, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	return p, nil
}

func (p *process) waitReady(timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %s", filepath.Base(p.cmd.Path), p.tail())
		default:
		}
		if ready() {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.stop()
	return fmt.Errorf("%s not ready within %v: %s", filepath.Base(p.cmd.Path), timeout, p.tail())
}

// tail is the end of the process's log, for error messages.
func (p *process) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}

func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill ends the API server at once (SIGKILL), as a crash would.
func (c *Cluster) KillAPIServer(t testing.TB) {
	t.Helper()
	c.apiserver.cmd.Process.Kill()
	<-c.apiserver.exited
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ctx is a context for one API call from a test.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
