// Package route is the route table of a listener: an ordered list of
// routes, each a match (on a gRPC call's service, method and :authority,
// or on a TLS connection's server name) and the cluster that takes what it
// matches, plus the listener's default cluster for what no route matches.
//
// A Table is immutable once built: a listener holds it behind an atomic
// pointer, reads it once per RPC (or connection) with no lock and no
// allocation, and a reload swaps in a new one. The first route that
// matches wins; every field a route names must match, and a field left
// empty matches anything.
//
// The rules of a match (what a valid service, method or host pattern is,
// and when one match covers another, so that a later route can never be
// reached) are this package's, so that the configuration's validation and
// the data path agree.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Match is what a route matches. Zero fields match anything; at least one
// must be set.
type Match struct {
	// Service is a gRPC service's full name, "pkg.v1.Service": it matches
	// a :path of "/pkg.v1.Service/<any method>". Exact, case-sensitive.
	Service string
	// Method, only with Service, makes the match exactly
	// "/Service/Method".
	Method string
	// Authority is a host, without port, that the :authority of a call
	// (its port removed) must equal, ignoring case; "*.example.com"
	// matches any one label in place of the "*" ("a.example.com", not
	// "example.com" nor "a.b.example.com"). Kept in lower case.
	Authority string
	// SNI is, for tcp listeners, the server name of a TLS ClientHello,
	// with the rules of Authority.
	SNI string
}

// Empty reports whether m names no field (and would match everything).
func (m Match) Empty() bool { return m == Match{} }

// Covers reports whether every request m2 matches is matched by m too: a
// route with m2 placed after one with m can never be chosen.
func (m Match) Covers(m2 Match) bool {
	if m.Service != "" && m.Service != m2.Service {
		return false
	}
	if m.Method != "" && m.Method != m2.Method {
		return false
	}
	return hostCovers(m.Authority, m2.Authority) && hostCovers(m.SNI, m2.SNI)
}

// hostCovers reports whether every host pattern b matches, a matches:
// both lower case and valid (CheckHost).
func hostCovers(a, b string) bool {
	switch {
	case a == "":
		return true
	case b == "":
		return false
	case a == b:
		return true
	case isWildcard(a) && !isWildcard(b):
		return MatchHost(a, b)
	}
	return false
}

func isWildcard(p string) bool { return strings.HasPrefix(p, "*.") }

// String describes m as a configuration names it, for messages.
func (m Match) String() string {
	var parts []string
	if m.Service != "" {
		parts = append(parts, "service "+m.Service)
	}
	if m.Method != "" {
		parts = append(parts, "method "+m.Method)
	}
	if m.Authority != "" {
		parts = append(parts, "authority "+m.Authority)
	}
	if m.SNI != "" {
		parts = append(parts, "sni "+m.SNI)
	}
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, ", ")
}

// Problems with a match's fields; errors.Is tells them apart.
var (
	ErrEmptyMatch         = errors.New("a route must match on something")
	ErrMethodNeedsService = errors.New("method needs service: a method is matched within its service")
)

// Check reports the first problem with m's fields taken together (each
// field on its own is checked by CheckService, CheckMethod, CheckHost).
func (m Match) Check() error {
	switch {
	case m.Empty():
		return ErrEmptyMatch
	case m.Method != "" && m.Service == "":
		return ErrMethodNeedsService
	}
	return nil
}

// CheckService reports whether s is a gRPC service's full name: dot
// separated identifiers (letters, digits, '_', not starting with a
// digit), as protobuf packages and services are named.
func CheckService(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.Contains(s, "/") {
		return fmt.Errorf("%q: a service is its full name, like orders.v1.Orders, without '/'", s)
	}
	for _, part := range strings.Split(s, ".") {
		if !isIdent(part) {
			return fmt.Errorf("%q is not a gRPC service name: dot-separated identifiers, like orders.v1.Orders", s)
		}
	}
	return nil
}

// CheckMethod reports whether s is a gRPC method name: one identifier.
func CheckMethod(s string) error {
	if !isIdent(s) {
		return fmt.Errorf("%q is not a gRPC method name: one identifier, like Charge (the service is in service)", s)
	}
	return nil
}

func isIdent(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// CheckHost validates a host pattern of Authority or SNI and returns it in
// lower case: a DNS name, "*." and a DNS name (one label in place of the
// "*"), an IPv4 address, or a bracketed IPv6 address ("[::1]", as
// :authority writes it). No port.
func CheckHost(s string) (string, error) {
	if s == "" {
		return "", errors.New("must not be empty")
	}
	h := strings.ToLower(s)
	if strings.HasPrefix(h, "[") {
		ip, err := netip.ParseAddr(strings.TrimSuffix(h[1:], "]"))
		if !strings.HasSuffix(h, "]") || err != nil || !ip.Is6() {
			return "", fmt.Errorf("%q is not a bracketed IPv6 address", s)
		}
		return "[" + ip.String() + "]", nil
	}
	if strings.Contains(h, ":") {
		return "", fmt.Errorf("%q: a host without port (the port is never matched)", s)
	}
	name := h
	if isWildcard(h) {
		name = h[2:]
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		if name != h || !ip.Is4() {
			return "", fmt.Errorf("%q: a wildcard goes before a DNS name, not an address", s)
		}
		return h, nil
	}
	if len(name) > 253 {
		return "", fmt.Errorf("%q: a host name is at most 253 characters", s)
	}
	for _, label := range strings.Split(name, ".") {
		if !isLabel(label) {
			return "", fmt.Errorf("%q is not a host name (letters, digits, '-' and '_' in dot-separated labels; \"*.\" only at the start)", s)
		}
	}
	return h, nil
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// MatchHost reports whether host (any case, without port) matches the
// lower-case pattern p (CheckHost's result). It does not allocate.
func MatchHost(p, host string) bool { return matchHost(p, host, hasUpper(host)) }

// matchHost is MatchHost knowing whether host has upper-case letters:
// without, plain comparisons do (about four times faster than EqualFold).
func matchHost(p, host string, upper bool) bool {
	if !isWildcard(p) {
		if !upper {
			return p == host
		}
		return len(p) == len(host) && strings.EqualFold(p, host)
	}
	suffix := p[1:] // ".example.com"
	n := len(host) - len(suffix)
	if n <= 0 {
		return false
	}
	if upper && !strings.EqualFold(host[n:], suffix) || !upper && host[n:] != suffix {
		return false
	}
	return strings.IndexByte(host[:n], '.') < 0
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// HostOf returns the host of an :authority (or Host) value: without its
// port, and for "[v6]:port" with its brackets. It does not allocate.
func HostOf(authority string) string {
	if strings.HasPrefix(authority, "[") {
		if i := strings.IndexByte(authority, ']'); i >= 0 {
			return authority[:i+1]
		}
		return authority
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		return authority[:i]
	}
	return authority
}
