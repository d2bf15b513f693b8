package config

import (
	"errors"
	"path/filepath"
	"time"

	"github.com/vigil-proxy/vigil/internal/tlsfiles"
)

// FilePath resolves a path written in the configuration: a relative path
// is relative to the directory of the configuration file, so that a file
// and the certificates beside it can be moved together.
func (c *Config) FilePath(p string) string {
	if p == "" || filepath.IsAbs(p) || c.File == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

// CheckFiles loads every certificate, key and CA file the configuration
// names and reports, at the position of the field that names it, a file
// that is missing or unreadable, is not PEM, holds a key that does not
// match its certificate, or a certificate outside its validity period at
// now; only listeners for which onlyListener returns true, and clusters
// for which onlyCluster does, are checked (nil: all). Errors wrap the
// tlsfiles sentinels (errors.Is(err, tlsfiles.ErrExpired) tells an
// expired certificate, which `vigil run` only warns about, from a file
// that cannot be served at all). Each file is read once however many
// fields name it.
func (c *Config) CheckFiles(now time.Time, onlyListener func(*Listener) bool, onlyCluster func(*Cluster) bool) ErrorList {
	fc := fileChecker{c: c, now: now, pairs: map[[2]string]error{}, cas: map[string]error{}}
	for i, l := range c.Listeners {
		if l.TLS == nil || onlyListener != nil && !onlyListener(&c.Listeners[i]) {
			continue
		}
		lpath := index("listeners", i)
		for _, p := range l.TLS.Certificates {
			fc.pair(p.CertFile, p.KeyFile, p.CertPos, p.KeyPos, join(lpath, p.Field))
		}
		if f := l.TLS.ClientCAFile; f != "" {
			fc.ca(f, l.TLS.ClientCAPos, join(lpath, "tls.client_ca_file"))
		}
	}
	for i, cl := range c.Clusters {
		if cl.TLS == nil || onlyCluster != nil && !onlyCluster(&c.Clusters[i]) {
			continue
		}
		cpath := index("clusters", i)
		if t := cl.TLS; t.CertFile != "" && t.KeyFile != "" {
			fc.pair(t.CertFile, t.KeyFile, t.CertPos, t.KeyPos, join(cpath, "tls"))
		}
		if f := cl.TLS.CAFile; f != "" {
			fc.ca(f, cl.TLS.CAPos, join(cpath, "tls.ca_file"))
		}
	}
	fc.errs.sort()
	return fc.errs
}

// fileChecker loads each file once and collects the problems.
type fileChecker struct {
	c     *Config
	now   time.Time
	pairs map[[2]string]error
	cas   map[string]error
	errs  ErrorList
}

// pair checks a certificate and its key; path is the mapping holding
// cert_file and key_file.
func (fc *fileChecker) pair(certFile, keyFile string, certPos, keyPos Pos, path string) {
	key := [2]string{fc.c.FilePath(certFile), fc.c.FilePath(keyFile)}
	err, seen := fc.pairs[key]
	if !seen {
		_, err = tlsfiles.LoadPair(key[0], key[1], fc.now)
		fc.pairs[key] = err
	}
	if err == nil {
		return
	}
	field, pos := tlsfiles.CertFile, certPos
	var fe *tlsfiles.Error
	if errors.As(err, &fe) && fe.Field == tlsfiles.KeyFile {
		field, pos = tlsfiles.KeyFile, keyPos
	}
	fc.errs = append(fc.errs, fc.c.fileError(pos, join(path, field), err))
}

// ca checks a CA bundle named at path.
func (fc *fileChecker) ca(file string, pos Pos, path string) {
	f := fc.c.FilePath(file)
	err, seen := fc.cas[f]
	if !seen {
		_, err = tlsfiles.LoadCAs(f, fc.now)
		fc.cas[f] = err
	}
	if err != nil {
		fc.errs = append(fc.errs, fc.c.fileError(pos, path, err))
	}
}

func (c *Config) fileError(pos Pos, path string, err error) *Error {
	return &Error{File: c.File, Line: max(pos.Line, 1), Col: max(pos.Col, 1), Path: path, Msg: err.Error(), Err: err}
}

// Fatal returns the errors of the list that are not an expired or not yet
// valid certificate: what keeps a configuration from being served.
func (l ErrorList) Fatal() ErrorList {
	var out ErrorList
	for _, e := range l {
		if !errors.Is(e, tlsfiles.ErrExpired) && !errors.Is(e, tlsfiles.ErrNotYetValid) {
			out = append(out, e)
		}
	}
	return out
}
