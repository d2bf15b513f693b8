package checker

import (
	"context"
	"net"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc/status"
)

// Probe connections use TCP keepalive with a user timeout, so that the
// kernel proves a quiet connection alive at no cost to the process: after
// interval without a byte from the backend it sends a keepalive probe,
// repeats it every timeout, and gives up on the connection (ETIMEDOUT) once
// interval + timeout have passed without an answer. A host that is powered
// off or blackholed is thus noticed within interval + timeout even while a
// Watch stream says nothing; and unlike HTTP/2 PINGs, keepalive probes are
// below HTTP/2, so no server answers them with GOAWAY too_many_pings. The
// kernel counts keepalive time in whole seconds, so the bound is really
// keepaliveBound: interval and timeout each rounded up to a second.

// keepaliveBound is how long after the last byte from a backend that went
// silent at the TCP level the kernel ends its probe connection, for cfg.
func keepaliveBound(cfg Config) time.Duration {
	return wholeSeconds(cfg.Interval) + wholeSeconds(cfg.Timeout)
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
			Idle:     cfg.Interval,
			Interval: cfg.Timeout,
			// The user timeout ends the connection; the count only has to
			// be high enough not to end it first.
			Count: int(max(cfg.Interval/cfg.Timeout, 1)) + 2,
		},
		Control: func(_, _ string, c syscall.RawConn) error {
			return setUserTimeout(c, cfg.Interval+cfg.Timeout)
		},
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
}

// diedOfKeepalive reports whether err, an RPC's error, says that the
// kernel ended the connection because the backend stopped answering at the
// TCP level (keepalive or unacknowledged data past the user timeout).
// grpc-go hands the transport's read error to the RPC only as text in an
// UNAVAILABLE status, hence the match on the errno's message.
func diedOfKeepalive(err error) bool {
	return err != nil && strings.Contains(status.Convert(err).Message(), syscall.ETIMEDOUT.Error())
}
