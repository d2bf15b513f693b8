// Package tlsconf turns the tls sections of vigil's configuration into
// crypto/tls configurations and keeps them current while the files they
// name change: a Store watches every certificate, key and CA file in use
// (one filewatch.Watcher, whatever their number) and, when one changes,
// reloads what names it. A pair or CA file that does not load is logged as
// `tls reload rejected` (ERROR, with the file and the error) and the
// previous one keeps serving; a good one replaces it for the next
// handshake, and connections already established are left alone.
//
// What uses a configuration reads it with one atomic load per handshake
// (Server.Config); the *tls.Config it gets is never modified.
//
// Goroutines: Store.Start starts one that watches and reloads, which its
// stop function ends and waits for; the Store's owner (the server) calls
// it. Nothing else here starts one. Lock order: Store.mu,
// then a source's mu.
package tlsconf

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/filewatch"
	"github.com/vigil-proxy/vigil/internal/tlsfiles"
)

// DefaultDebounce lets the writes of a rotation (a certificate, then its
// key) settle into one reload.
const DefaultDebounce = 100 * time.Millisecond

// Options configure a Store.
type Options struct {
	Logger *slog.Logger
	// Debounce is how long file events settle; zero: DefaultDebounce.
	Debounce time.Duration
	// Now is the clock for validity checks; nil: time.Now.
	Now func() time.Time
}

// Store owns the file watch of every TLS source it made.
type Store struct {
	log      *slog.Logger
	now      func() time.Time
	debounce time.Duration

	mu      sync.Mutex
	w       *filewatch.Watcher // nil until Start
	sources map[source]struct{}
}

// source is a Server (or, later, a client configuration): something built
// from files that reloads.
type source interface {
	files() []string
	reload(changed []string)
}

// New returns a Store watching nothing yet; Start watches.
func New(opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{log: opts.Logger, now: opts.Now, debounce: opts.Debounce, sources: map[source]struct{}{}}
}

// Start starts watching the files of the sources, and returns once the
// watch is in place; stop ends it and waits for its goroutine. Without
// file watching (no inotify instance left), the sources still serve; their
// files then reload only with the configuration, as the warning logged
// says.
func (s *Store) Start() (stop func()) {
	w, err := filewatch.NewSet(nil, s.debounce, s.log)
	if err != nil {
		s.log.Warn("cannot watch TLS files; certificates will reload only with the configuration", "err", err)
		return func() {}
	}
	s.mu.Lock()
	s.w = w
	s.rewatchLocked()
	srcs := s.sourcesLocked()
	s.mu.Unlock()
	// What changed between a source's loading and the watch's first look
	// would never be reported: look now.
	for _, src := range srcs {
		src.reload(src.files())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.RunFiles(ctx, func(changed []string) {
			s.mu.Lock()
			srcs := s.sourcesLocked()
			s.mu.Unlock()
			for _, src := range srcs {
				src.reload(changed)
			}
		})
	}()
	return func() {
		cancel()
		<-done
	}
}

func (s *Store) sourcesLocked() []source {
	srcs := make([]source, 0, len(s.sources))
	for src := range s.sources {
		srcs = append(srcs, src)
	}
	return srcs
}

func (s *Store) add(src source) {
	s.mu.Lock()
	s.sources[src] = struct{}{}
	s.rewatchLocked()
	s.mu.Unlock()
	// A change between loading and the watch's first look at the files
	// would be missed.
	src.reload(src.files())
}

func (s *Store) remove(src source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sources, src)
	s.rewatchLocked()
}

func (s *Store) rewatchLocked() {
	if s.w == nil {
		return
	}
	var paths []string
	for src := range s.sources {
		paths = append(paths, src.files()...)
	}
	slices.Sort(paths)
	if err := s.w.Set(slices.Compact(paths)); err != nil {
		s.log.Warn("cannot watch TLS files; they will not reload until the configuration changes", "err", err)
	}
}

// Cert describes a certificate in use, for metrics and logs.
type Cert struct {
	File     string
	NotAfter time.Time
}

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

	mu    sync.Mutex // serializes reloads
	pairs []*pairFile
	ca    *caFile
	cur   atomic.Pointer[tls.Config]
}

type pairFile struct {
	certFile, keyFile string
	cur               *tlsfiles.Pair
}

type caFile struct {
	file string
	cur  *tlsfiles.CAs
}

// Server loads the files of a listener's tls section (paths already
// resolved, see config.Config.FilePath) and keeps them current. An error
// names the first file that did not load; an expired certificate is no
// error here (validation reports it).
func (s *Store) Server(spec config.ListenerTLS, opts ServerOptions) (*Server, error) {
	srv := &Server{st: s, opts: opts, spec: spec}
	now := s.now()
	for _, p := range spec.Certificates {
		pair, err := tlsfiles.LoadPair(p.CertFile, p.KeyFile, now)
		if pair == nil {
			return nil, err
		}
		srv.pairs = append(srv.pairs, &pairFile{certFile: p.CertFile, keyFile: p.KeyFile, cur: pair})
	}
	if spec.ClientCAFile != "" {
		cas, err := tlsfiles.LoadCAs(spec.ClientCAFile, now)
		if cas == nil {
			return nil, err
		}
		srv.ca = &caFile{file: spec.ClientCAFile, cur: cas}
	}
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
	return srv.certsLocked()
}

func (srv *Server) certsLocked() []Cert {
	certs := make([]Cert, 0, len(srv.pairs))
	for _, p := range srv.pairs {
		certs = append(certs, Cert{File: p.certFile, NotAfter: p.cur.Leaf().NotAfter})
	}
	return certs
}

func (srv *Server) files() []string {
	var f []string
	for _, p := range srv.pairs {
		f = append(f, p.certFile, p.keyFile)
	}
	if srv.ca != nil {
		f = append(f, srv.ca.file)
	}
	return f
}

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
	for _, p := range srv.pairs {
		cfg.Certificates = append(cfg.Certificates, *p.cur.Cert)
	}
	if srv.ca != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = srv.ca.cur.Pool
	}
	srv.cur.Store(cfg)
	if srv.opts.OnUpdate != nil {
		srv.opts.OnUpdate(srv.certsLocked())
	}
}

// reload reloads the pairs and the CA file that changed; a file that does
// not load leaves the previous one in use.
func (srv *Server) reload(changed []string) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	now := srv.st.now()
	updated := false
	for _, p := range srv.pairs {
		if !slices.Contains(changed, p.certFile) && !slices.Contains(changed, p.keyFile) {
			continue
		}
		pair, err := tlsfiles.LoadPair(p.certFile, p.keyFile, now)
		if pair == nil || (err != nil && tlsfiles.Validity("", "", p.cur.Leaf(), now) == nil) {
			// Also refuse an expired certificate in place of one that is
			// still good: that rotation went wrong.
			srv.rejected(err)
			continue
		}
		if pair.Sum == p.cur.Sum {
			continue
		}
		p.cur, updated = pair, true
		srv.st.log.Info("tls certificate reloaded", "listener", srv.opts.Listener, "file", p.certFile,
			"names", names(pair), "not_after", pair.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
	if srv.ca != nil && slices.Contains(changed, srv.ca.file) {
		cas, err := tlsfiles.LoadCAs(srv.ca.file, now)
		switch {
		case cas == nil:
			srv.rejected(err)
		case cas.Sum != srv.ca.cur.Sum:
			srv.ca.cur, updated = cas, true
			srv.st.log.Info("tls client CA reloaded", "listener", srv.opts.Listener, "file", srv.ca.file, "certificates", len(cas.Certs))
		}
	}
	if updated {
		srv.build()
	}
}

func (srv *Server) rejected(err error) {
	file := ""
	var fe *tlsfiles.Error
	if errors.As(err, &fe) {
		file = fe.File
	}
	srv.st.log.Error("tls reload rejected", "listener", srv.opts.Listener, "file", file, "error", err.Error(),
		"kept", "the previous certificate keeps serving")
}

func names(p *tlsfiles.Pair) []string {
	leaf := p.Leaf()
	n := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		n = append(n, ip.String())
	}
	if len(n) == 0 && leaf.Subject.CommonName != "" {
		n = append(n, leaf.Subject.CommonName)
	}
	return n
}
