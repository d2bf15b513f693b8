package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// acceptor owns a listening socket and hands each accepted connection to
// the virtual listener in force. A reload that keeps an address but changes
// what serves it (another protocol, other limits) swaps the virtual
// listener: the socket, its backlog and its port stay.
type acceptor struct {
	ln     net.Listener
	log    *slog.Logger
	target atomic.Pointer[virtualListener]
	done   chan struct{}
}

func listen(address string, log *slog.Logger) (*acceptor, error) {
	ln, err := net.Listen("tcp", address)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", address, err)
	}
	a := &acceptor{ln: ln, log: log, done: make(chan struct{})}
	go a.run()
	return a, nil
}

// Addr is the bound address.
func (a *acceptor) Addr() net.Addr { return a.ln.Addr() }

// serve directs new connections to vl.
func (a *acceptor) serve(vl *virtualListener) { a.target.Store(vl) }

func (a *acceptor) run() {
	defer close(a.done)
	var backoff time.Duration
	for {
		conn, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait and retry rather
			// than spin, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			a.log.Warn("accept failed; retrying", "address", a.ln.Addr().String(), "err", err, "retry_in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		a.handOver(conn)
	}
}

// handOver delivers conn to the virtual listener in force. If that one was
// closed by a reload that swapped in another, the connection goes to the
// new one rather than being dropped.
func (a *acceptor) handOver(conn net.Conn) {
	for {
		vl := a.target.Load()
		if vl == nil {
			_ = conn.Close()
			return
		}
		if vl.deliver(conn) {
			return
		}
		if a.target.Load() == vl {
			_ = conn.Close()
			return
		}
	}
}

// close closes the socket and waits for the accept loop to end.
func (a *acceptor) close() {
	_ = a.ln.Close()
	<-a.done
}

// virtualListener is the net.Listener a proxy serves: it yields the
// connections its acceptor hands over, and closing it leaves the socket
// open for whoever serves the address next.
type virtualListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func newVirtualListener(addr net.Addr) *virtualListener {
	return &virtualListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// deliver hands conn to the proxy; false if the listener is closed.
func (l *virtualListener) deliver(conn net.Conn) bool {
	select {
	case l.conns <- conn:
		return true
	case <-l.done:
		return false
	}
}

func (l *virtualListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *virtualListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *virtualListener) Addr() net.Addr { return l.addr }
