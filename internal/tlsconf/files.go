package tlsconf

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"time"

	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/tlsfiles"
)

// fileSet is the certificate pairs and CA bundle of one tls section, as
// last loaded successfully; its owner serializes reloads.
type fileSet struct {
	st *Store
	// owner names it in logs: "listener", NAME or "cluster", NAME.
	owner []any
	pairs []*pairFile
	ca    *caFile
}

type pairFile struct {
	certFile, keyFile string
	cur               *tlsfiles.Pair
}

type caFile struct {
	file string
	cur  *tlsfiles.CAs
}

// loadFiles loads pairs and the CA bundle at caPath ("" for none). An error
// names the first file that did not load; an expired certificate is no
// error here (validation reports it).
func (s *Store) loadFiles(pairs []config.CertificatePair, caPath string, owner ...any) (*fileSet, error) {
	fs := &fileSet{st: s, owner: owner}
	now := s.now()
	for _, p := range pairs {
		pair, err := tlsfiles.LoadPair(p.CertFile, p.KeyFile, now)
		if pair == nil {
			return nil, err
		}
		fs.pairs = append(fs.pairs, &pairFile{certFile: p.CertFile, keyFile: p.KeyFile, cur: pair})
	}
	if caPath != "" {
		cas, err := tlsfiles.LoadCAs(caPath, now)
		if cas == nil {
			return nil, err
		}
		fs.ca = &caFile{file: caPath, cur: cas}
	}
	return fs, nil
}

func (fs *fileSet) files() []string {
	var f []string
	for _, p := range fs.pairs {
		f = append(f, p.certFile, p.keyFile)
	}
	if fs.ca != nil {
		f = append(f, fs.ca.file)
	}
	return f
}

func (fs *fileSet) certs() []Cert {
	certs := make([]Cert, 0, len(fs.pairs))
	for _, p := range fs.pairs {
		certs = append(certs, Cert{File: p.certFile, NotAfter: p.cur.Leaf().NotAfter})
	}
	return certs
}

// reload reloads the pairs and the CA bundle among changed and reports
// whether any of them changed; a file that does not load leaves the
// previous one in use, and so does an expired certificate in place of one
// that is still good (that rotation went wrong).
func (fs *fileSet) reload(changed []string) bool {
	now := fs.st.now()
	updated := false
	for _, p := range fs.pairs {
		if !slices.Contains(changed, p.certFile) && !slices.Contains(changed, p.keyFile) {
			continue
		}
		pair, err := tlsfiles.LoadPair(p.certFile, p.keyFile, now)
		if pair == nil || (err != nil && tlsfiles.Validity("", "", p.cur.Leaf(), now) == nil) {
			fs.rejected(err)
			continue
		}
		if pair.Sum == p.cur.Sum {
			continue
		}
		p.cur, updated = pair, true
		fs.st.log.Info("tls certificate reloaded", append(slices.Clone(fs.owner), "file", p.certFile,
			"names", names(pair), "not_after", pair.Leaf().NotAfter.UTC().Format(time.RFC3339))...)
	}
	if fs.ca != nil && slices.Contains(changed, fs.ca.file) {
		cas, err := tlsfiles.LoadCAs(fs.ca.file, now)
		switch {
		case cas == nil:
			fs.rejected(err)
		case cas.Sum != fs.ca.cur.Sum:
			fs.ca.cur, updated = cas, true
			fs.st.log.Info("tls CA reloaded", append(slices.Clone(fs.owner), "file", fs.ca.file, "certificates", len(cas.Certs))...)
		}
	}
	return updated
}

func (fs *fileSet) rejected(err error) {
	file := ""
	var fe *tlsfiles.Error
	if errors.As(err, &fe) {
		file = fe.File
	}
	fs.st.log.LogAttrs(context.Background(), slog.LevelError, "tls reload rejected", append(attrs(fs.owner),
		slog.String("file", file), slog.String("error", err.Error()),
		slog.String("kept", "the previous file keeps serving"))...)
}

func attrs(kv []any) []slog.Attr {
	var out []slog.Attr
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, slog.Any(kv[i].(string), kv[i+1]))
	}
	return out
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
