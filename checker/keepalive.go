package checker

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Probe connections use TCP keepalive with a user timeout, so that the
// kernel proves a quiet connection alive at no cost to the process: after
// half an interval without a byte from the backend it sends a keepalive
// probe, repeats it every second, and gives up on the connection
// (ETIMEDOUT) once interval + timeout have passed without an answer. The
// several probes in that window matter: a single lost probe or answer
// must not end a healthy connection (at 10,000 connections, bursts of
// keepalive probes overflow even the loopback device's backlog, and with
// one probe per window a few healthy endpoints a minute were evicted). A host that is powered
// off or blackholed is thus noticed within interval + timeout even while a
// Watch stream says nothing; and unlike HTTP/2 PINGs, keepalive probes are
// below HTTP/2, so no server answers them with GOAWAY too_many_pings. The
// kernel counts keepalive time in whole seconds, so the bound is really
// keepaliveBound.

// keepaliveIdle is the silence after which the kernel starts probing.
func keepaliveIdle(cfg Config) time.Duration { return wholeSeconds(cfg.Interval / 2) }

// keepaliveBound is how long after the last byte from a backend that went
// silent at the TCP level the kernel ends its probe connection, for cfg:
// the first keepalive tick (idle, then every second) at or after
// interval + timeout.
func keepaliveBound(cfg Config) time.Duration {
	return max(wholeSeconds(cfg.Interval+cfg.Timeout), keepaliveIdle(cfg)+time.Second)
}

// wholeSeconds rounds d up to whole seconds, at least one, as the net
// package does for keepalive settings.
func wholeSeconds(d time.Duration) time.Duration {
	return max((d+time.Second-1)/time.Second, 1) * time.Second
}

// probeDialer dials probe connections with keepalive set for cfg.
func probeDialer(cfg Config) func(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{
			Enable:   true,
			Idle:     keepaliveIdle(cfg),
			Interval: time.Second,
			// The user timeout ends the connection; the count only has to
			// be high enough not to end it first.
			Count: int((cfg.Interval+cfg.Timeout)/time.Second) + 2,
		},
		Control: func(_, _ string, c syscall.RawConn) error {
			return setUserTimeout(c, cfg.Interval+cfg.Timeout)
		},
	}
	if cfg.TLS == nil {
		return func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return handshake(ctx, nc, cfg.TLS.ClientConfig(addr, true), true)
	}
}

// handshake completes a TLS client handshake on nc within ctx, or closes
// nc. Its error is a *TLSError (tlserr.go), or a context's or socket's.
func handshake(ctx context.Context, nc net.Conn, cfg *tls.Config, h2 bool) (net.Conn, error) {
	// Under TLS 1.3 the client's handshake is done before the server has
	// judged the client's certificate (or its absence): a refusal comes
	// as an alert after it, and the first write would only see a broken
	// pipe. So when the server asks for a certificate, wait for its first
	// bytes (an HTTP/2 server sends SETTINGS at once; h2 says it is one):
	// an alert then fails the handshake with its reason.
	var asked atomic.Bool
	c := cfg.Clone()
	certs := cfg.Certificates
	c.Certificates = nil
	c.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		asked.Store(true)
		for i := range certs {
			if cri.SupportsCertificate(&certs[i]) == nil {
				return &certs[i], nil
			}
		}
		return &tls.Certificate{}, nil // none acceptable: send none, as crypto/tls does
	}
	tc := tls.Client(nc, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, newTLSError(err, cfg)
	}
	if !h2 || !asked.Load() || tc.ConnectionState().Version != tls.VersionTLS13 {
		return tc, nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		_ = tc.SetReadDeadline(deadline)
	}
	buf := make([]byte, 512)
	n, err := tc.Read(buf)
	_ = tc.SetReadDeadline(time.Time{})
	if n == 0 && err != nil {
		_ = nc.Close()
		if isRemoteAlert(err) {
			return nil, newTLSError(err, cfg)
		}
		return nil, err
	}
	return &prefixConn{Conn: tc, prefix: buf[:n]}, nil
}

// prefixConn is a connection whose first bytes were read already.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// diedOfKeepalive reports whether err, an RPC's error, says that the
// kernel ended the connection because the backend stopped answering at the
// TCP level (keepalive or unacknowledged data past the user timeout): the
// probe connection's error wraps the socket's.
func diedOfKeepalive(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT)
}
