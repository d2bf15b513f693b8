package tlsconf

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"

	"github.com/vigil-proxy/vigil/internal/config"
)

// ClientOptions say what a Client is for.
type ClientOptions struct {
	// Cluster names it in logs.
	Cluster string
	// OnUpdate, if set, is called with the client certificate in use (none
	// or one) when the Client is made and after every reload that changed
	// it.
	OnUpdate func([]Cert)
}

// Client is the live TLS configuration vigil dials one cluster's
// endpoints with. It implements checker.TLS and balancer.TLS.
type Client struct {
	st   *Store
	opts ClientOptions
	spec config.ClusterTLS

	mu  sync.Mutex // serializes reloads
	fs  *fileSet
	cur atomic.Pointer[clientState]
}

// clientState is one generation of a Client's configuration: the base
// built from the files, and the per-server-name copies made from it as
// dials ask for them. A reload publishes a new generation, so a copy
// never outlives the files it was made from.
type clientState struct {
	base   *tls.Config
	byName sync.Map // clientKey -> *tls.Config
	// names counts byName's entries, which stop at maxNames: a cluster
	// whose discovered addresses churn for weeks must not grow it forever
	// (past the cap, each dial makes its own copy).
	names atomic.Int32
}

const maxNames = 4096

type clientKey struct {
	name string
	h2   bool
}

// Client loads the files of a cluster's tls section (paths already
// resolved, see config.Config.FilePath) and keeps them current. An error
// names the first file that did not load; an expired certificate is no
// error here (validation reports it).
func (s *Store) Client(spec config.ClusterTLS, opts ClientOptions) (*Client, error) {
	var pairs []config.CertificatePair
	if spec.CertFile != "" && spec.KeyFile != "" {
		pairs = []config.CertificatePair{{CertFile: spec.CertFile, KeyFile: spec.KeyFile}}
	}
	fs, err := s.loadFiles(pairs, spec.CAFile, "cluster", opts.Cluster)
	if err != nil {
		return nil, err
	}
	c := &Client{st: s, opts: opts, spec: spec, fs: fs}
	c.build()
	s.add(c)
	return c, nil
}

// ClientConfig is the configuration of a new connection to address (a
// host:port): the cluster's server_name, or else address's host, is sent
// as SNI (unless it is an IP address) and verified against the
// endpoint's certificate; with h2 the connection offers ALPN h2. It is
// read at every dial, so that a reloaded file is used from the next
// handshake on. The result is shared: never modify it.
func (c *Client) ClientConfig(address string, h2 bool) *tls.Config {
	st := c.cur.Load()
	name := c.spec.ServerName
	if name == "" {
		name = address
		if host, _, err := net.SplitHostPort(address); err == nil {
			name = host
		}
	}
	key := clientKey{name: name, h2: h2}
	if cfg, ok := st.byName.Load(key); ok {
		return cfg.(*tls.Config)
	}
	cfg := st.base.Clone()
	cfg.ServerName = name
	if h2 {
		cfg.NextProtos = []string{"h2"}
	}
	if st.names.Load() >= maxNames {
		return cfg
	}
	got, loaded := st.byName.LoadOrStore(key, cfg)
	if !loaded {
		st.names.Add(1)
	}
	return got.(*tls.Config)
}

// MutualTLS reports whether the Client presents a certificate.
func (c *Client) MutualTLS() bool { return len(c.fs.pairs) > 0 }

// Close stops reloading the Client's files.
func (c *Client) Close() { c.st.remove(c) }

// Certs lists the client certificate in use, if any.
func (c *Client) Certs() []Cert {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fs.certs()
}

func (c *Client) files() []string { return c.fs.files() }

// build makes the base configuration from the files as loaded and
// publishes it. The caller holds mu, or is the constructor.
func (c *Client) build() {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: c.spec.InsecureSkipVerify, //nolint:gosec // the operator asked for it
	}
	for _, p := range c.fs.pairs {
		cfg.Certificates = append(cfg.Certificates, *p.cur.Cert)
	}
	if c.fs.ca != nil {
		cfg.RootCAs = c.fs.ca.cur.Pool
	}
	c.cur.Store(&clientState{base: cfg})
	if c.opts.OnUpdate != nil {
		c.opts.OnUpdate(c.fs.certs())
	}
}

func (c *Client) reload(changed []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fs.reload(changed) {
		c.build()
	}
}
