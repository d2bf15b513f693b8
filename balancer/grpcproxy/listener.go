package grpcproxy

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// limitListener enforces MaxConnections and reports connections to
// Metrics. A connection over the cap is accepted and closed at once, so
// the client fails fast (UNAVAILABLE) instead of hanging in the kernel's
// backlog.
type limitListener struct {
	net.Listener
	p *Proxy
}

// connLimit is the listener's connection accounting.
type connLimit struct {
	active     atomic.Int64
	lastWarned atomic.Int64 // unix nanoseconds, rate-limits the warning
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lim := &l.p.connLimit
		n := lim.active.Add(1)
		if max := l.p.maxConns; max > 0 && n > int64(max) {
			lim.active.Add(-1)
			if l.p.metrics != nil {
				l.p.metrics.ConnRejected()
			}
			_ = conn.Close()
			now := time.Now().UnixNano()
			if last := lim.lastWarned.Load(); now-last > int64(time.Second) && lim.lastWarned.CompareAndSwap(last, now) {
				l.p.log.Warn("client connection rejected: listener at max_connections",
					"listener", l.Addr().String(), "max_connections", max, "remote", conn.RemoteAddr().String())
			}
			continue
		}
		if l.p.metrics != nil {
			l.p.metrics.ConnOpened()
		}
		return &countedConn{Conn: conn, p: l.p}, nil
	}
}

// countedConn gives its slot back when closed (once, however often grpc-go
// closes it).
type countedConn struct {
	net.Conn
	p    *Proxy
	once sync.Once
}

// SyscallConn gives the proxy's raw I/O the connection's socket.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	return sc.SyscallConn()
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.p.connLimit.active.Add(-1)
		if c.p.metrics != nil {
			c.p.metrics.ConnClosed()
		}
	})
	return err
}
