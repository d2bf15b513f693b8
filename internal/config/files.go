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
// now; only listeners for which only returns true are checked (nil: all).
// Errors wrap the tlsfiles sentinels (errors.Is(err,
// tlsfiles.ErrExpired) tells an expired certificate, which `vigil run`
// only warns about, from a file that cannot be served at all). Each file
// is read once however many fields name it.
func (c *Config) CheckFiles(now time.Time, only func(*Listener) bool) ErrorList {
	var errs ErrorList
	pairs := map[[2]string]error{}
	cas := map[string]error{}
	for i, l := range c.Listeners {
		if l.TLS == nil || only != nil && !only(&c.Listeners[i]) {
			continue
		}
		lpath := index("listeners", i)
		for _, p := range l.TLS.Certificates {
			key := [2]string{c.FilePath(p.CertFile), c.FilePath(p.KeyFile)}
			err, seen := pairs[key]
			if !seen {
				_, err = tlsfiles.LoadPair(key[0], key[1], now)
				pairs[key] = err
			}
			if err == nil {
				continue
			}
			field, pos := tlsfiles.CertFile, p.CertPos
			var fe *tlsfiles.Error
			if errors.As(err, &fe) && fe.Field == tlsfiles.KeyFile {
				field, pos = tlsfiles.KeyFile, p.KeyPos
			}
			errs = append(errs, c.fileError(pos, join(lpath, join(p.Field, field)), err))
		}
		if f := l.TLS.ClientCAFile; f != "" {
			err, seen := cas[c.FilePath(f)]
			if !seen {
				_, err = tlsfiles.LoadCAs(c.FilePath(f), now)
				cas[c.FilePath(f)] = err
			}
			if err != nil {
				errs = append(errs, c.fileError(l.TLS.ClientCAPos, join(lpath, "tls.client_ca_file"), err))
			}
		}
	}
	errs.sort()
	return errs
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
