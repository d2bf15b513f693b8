package tlsterm

import (
	"context"
	"net"
	"sync"
)

// Listener is a net.Listener whose Accept returns *tls.Conn with their
// handshake done. Handshakes run concurrently, each on its own goroutine,
// so a slow client holds up nobody else.
type Listener struct {
	inner net.Listener
	t     *Terminator
	ready chan net.Conn
	done  chan struct{}

	mu       sync.Mutex
	closed   bool
	err      error // why the accept loop ended, for Accept
	inflight map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// Listen starts terminating TLS on the connections of inner. Closing the
// Listener closes inner.
func (t *Terminator) Listen(inner net.Listener) *Listener {
	l := &Listener{inner: inner, t: t, ready: make(chan net.Conn), done: make(chan struct{}), inflight: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		conn, err := l.inner.Accept()
		if err != nil {
			l.mu.Lock()
			if l.err == nil {
				l.err = err
			}
			l.mu.Unlock()
			l.shut()
			return
		}
		if !l.start(conn) {
			_ = conn.Close()
		}
	}
}

// start runs conn's handshake on a goroutine of its own; false when the
// listener is closed or at MaxHandshakes.
func (l *Listener) start(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	opts := l.t.opts.Load()
	if opts.MaxHandshakes > 0 && len(l.inflight) >= opts.MaxHandshakes {
		if opts.OnHandshake != nil {
			opts.OnHandshake(ResultOverLimit, nil)
		}
		return false
	}
	l.inflight[conn] = struct{}{}
	l.wg.Add(1)
	go l.handshake(conn)
	return true
}

func (l *Listener) handshake(conn net.Conn) {
	defer l.wg.Done()
	tc, err := l.t.Handshake(context.Background(), conn)
	l.mu.Lock()
	delete(l.inflight, conn)
	l.mu.Unlock()
	if err != nil {
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		_ = tc.Close()
	}
}

// Accept returns the next connection whose handshake succeeded.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		return nil, l.err
	}
}

// shut marks the listener closed and ends the handshakes in flight.
func (l *Listener) shut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.err == nil {
		l.err = net.ErrClosed
	}
	close(l.done)
	for c := range l.inflight {
		_ = c.Close()
	}
}

// Close stops accepting, closes inner and the connections still
// handshaking, and waits for every goroutine of the Listener.
func (l *Listener) Close() error {
	err := l.inner.Close()
	l.shut()
	l.wg.Wait()
	return err
}

// Addr is inner's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }
