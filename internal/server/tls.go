package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/vigil-proxy/vigil/balancer/tlsterm"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/tlsconf"
)

// listenerTLS is a TLS listener's termination: the live configuration
// built from its files and the terminator that serves it. A reload that
// changes only the tls section swaps both in place: the socket, the proxy
// and the established connections stay.
type listenerTLS struct {
	src  *tlsconf.Server
	term *tlsterm.Terminator
}

// checkTLSFiles checks the certificate, key and CA files of the listeners
// of cfg that are new or whose tls section changed: files that cannot
// serve make the configuration fail; an expired certificate is logged and
// served (`vigil validate` refuses it).
func (s *Server) checkTLSFiles(cfg *config.Config) error {
	errs := cfg.CheckFiles(time.Now(), func(l *config.Listener) bool {
		old := s.listeners[l.Name]
		return old == nil || !old.cfg.TLS.Equal(l.TLS)
	}, func(c *config.Cluster) bool {
		old := s.clusters[c.Name]
		return old == nil || old.tls == nil || !old.cfg.TLS.Equal(c.TLS)
	})
	if fatal := errs.Fatal(); len(fatal) > 0 {
		return fatal
	}
	for _, e := range errs {
		s.log.Warn("tls certificate not valid now", "error", e.Error())
	}
	return nil
}

// prepareTLS loads the TLS configuration of every listener of cfg whose
// tls section is new or changed, before anything else changes: a file
// that fails here (it changed since it was checked) fails the whole
// configuration. Unchanged ones are left out: their listener keeps its own.
func (s *Server) prepareTLS(cfg *config.Config) (map[string]*tlsconf.Server, error) {
	srcs := map[string]*tlsconf.Server{}
	for i, l := range cfg.Listeners {
		if l.TLS == nil {
			continue
		}
		if old := s.listeners[l.Name]; old != nil && old.tls != nil && old.cfg.TLS.Equal(l.TLS) {
			continue
		}
		spec := *l.TLS
		spec.Certificates = append([]config.CertificatePair(nil), l.TLS.Certificates...)
		for j := range spec.Certificates {
			spec.Certificates[j].CertFile = cfg.FilePath(spec.Certificates[j].CertFile)
			spec.Certificates[j].KeyFile = cfg.FilePath(spec.Certificates[j].KeyFile)
		}
		spec.ClientCAFile = cfg.FilePath(spec.ClientCAFile)
		name := l.Name
		src, err := s.tls.Server(spec, tlsconf.ServerOptions{
			Listener:   name,
			NextProtos: alpn(l.Protocol),
			OnUpdate:   func(certs []tlsconf.Cert) { s.metrics.m.TLSCertificates(name, certs) },
		})
		if err != nil {
			for _, o := range srcs {
				o.Close()
			}
			return nil, config.ErrorList{cfg.Errorf(l.TLS.Pos, fmt.Sprintf("listeners[%d].tls", i), "%w", err)}
		}
		srcs[l.Name] = src
	}
	return srcs, nil
}

// prepareClusterTLS loads the TLS configuration of every cluster of cfg
// whose tls section is new or changed, as prepareTLS does for listeners;
// unchanged ones keep theirs.
func (s *Server) prepareClusterTLS(cfg *config.Config) (map[string]*tlsconf.Client, error) {
	clients := map[string]*tlsconf.Client{}
	for i, c := range cfg.Clusters {
		if c.TLS == nil {
			continue
		}
		if old := s.clusters[c.Name]; old != nil && old.tls != nil && old.cfg.TLS.Equal(c.TLS) {
			continue
		}
		spec := *c.TLS
		spec.CAFile, spec.CertFile, spec.KeyFile = cfg.FilePath(spec.CAFile), cfg.FilePath(spec.CertFile), cfg.FilePath(spec.KeyFile)
		cl, err := s.tls.Client(spec, tlsconf.ClientOptions{Cluster: c.Name})
		if err != nil {
			for _, o := range clients {
				o.Close()
			}
			return nil, config.ErrorList{cfg.Errorf(c.TLS.Pos, fmt.Sprintf("clusters[%d].tls", i), "%w", err)}
		}
		clients[c.Name] = cl
	}
	return clients, nil
}

// alpn is the application protocol a listener requires of TLS clients.
func alpn(p config.Protocol) []string {
	if p == config.ProtocolGRPC {
		return []string{"h2"}
	}
	return nil
}

// terminatorOptions are the options of l's terminator with src.
func (s *Server) terminatorOptions(l config.Listener, src *tlsconf.Server) tlsterm.Options {
	opts := tlsterm.Options{
		Config:           src.Config,
		HandshakeTimeout: l.TLS.HandshakeTimeout,
		MaxHandshakes:    l.MaxConnections,
	}
	if p := alpn(l.Protocol); len(p) > 0 {
		opts.RequireALPN = p[0]
	} else {
		opts.EchoALPN = true
	}
	count := s.metrics.m.TLSHandshake(l.Name)
	log := s.log.With("listener", l.Name)
	opts.OnHandshake = func(r tlsterm.Result, err error) {
		count(r, err)
		if err != nil && log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug("tls handshake failed", "result", string(r), "error", err.Error())
		}
	}
	return opts
}

// newListenerTLS makes the termination of a new TLS listener.
func (s *Server) newListenerTLS(l config.Listener, src *tlsconf.Server) *listenerTLS {
	return &listenerTLS{src: src, term: tlsterm.New(s.terminatorOptions(l, src))}
}

// update swaps in a changed tls section: the next handshake uses it.
func (lt *listenerTLS) update(s *Server, l config.Listener, src *tlsconf.Server) {
	old := lt.src
	lt.src = src
	lt.term.SetOptions(s.terminatorOptions(l, src))
	old.Close()
}

// close stops keeping the configuration current, unless another proxy
// took it over.
func (lt *listenerTLS) close() {
	if lt != nil && lt.src != nil {
		lt.src.Close()
	}
}
