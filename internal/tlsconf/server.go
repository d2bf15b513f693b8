package tlsconf

import (
	"crypto/tls"
	"sync"
	"sync/atomic"

	"github.com/vigil-proxy/vigil/internal/config"
)

// ServerOptions say what a Server is for.
type ServerOptions struct {
	// Listener names it in logs.
	Listener string
	// NextProtos is the ALPN list ([]string{"h2"} for grpc listeners).
	NextProtos []string
	// OnUpdate, if set, is called with the certificates in use when the
	// Server is made and after every reload that changed them.
	OnUpdate func([]Cert)
}

// Server is the live TLS configuration of one listener.
type Server struct {
	st   *Store
	opts ServerOptions
	spec config.ListenerTLS

	mu  sync.Mutex // serializes reloads
	fs  *fileSet
	cur atomic.Pointer[tls.Config]
}

// Server loads the files of a listener's tls section (paths already
// resolved, see config.Config.FilePath) and keeps them current. An error
// names the first file that did not load; an expired certificate is no
// error here (validation reports it).
func (s *Store) Server(spec config.ListenerTLS, opts ServerOptions) (*Server, error) {
	fs, err := s.loadFiles(spec.Certificates, spec.ClientCAFile, "listener", opts.Listener)
	if err != nil {
		return nil, err
	}
	srv := &Server{st: s, opts: opts, spec: spec, fs: fs}
	srv.build()
	s.add(srv)
	return srv, nil
}

// Config is the configuration for the next handshake.
func (srv *Server) Config() *tls.Config { return srv.cur.Load() }

// Close stops reloading the Server's files.
func (srv *Server) Close() { srv.st.remove(srv) }

// Certs lists the certificates in use, in the configuration's order.
func (srv *Server) Certs() []Cert {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.fs.certs()
}

func (srv *Server) files() []string { return srv.fs.files() }

// build makes the configuration from the files as loaded and publishes
// it. The caller holds mu, or is the constructor.
func (srv *Server) build() {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: srv.opts.NextProtos,
	}
	if srv.spec.MinVersion == config.TLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	for _, p := range srv.fs.pairs {
		cfg.Certificates = append(cfg.Certificates, *p.cur.Cert)
	}
	if srv.fs.ca != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = srv.fs.ca.cur.Pool
	}
	srv.cur.Store(cfg)
	if srv.opts.OnUpdate != nil {
		srv.opts.OnUpdate(srv.fs.certs())
	}
}

func (srv *Server) reload(changed []string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.fs.reload(changed) {
		srv.build()
	}
}
