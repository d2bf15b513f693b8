// Package probeconn is the client connection of vigil's gRPC health
// probes: a grpc.ClientConnInterface to one backend that speaks HTTP/2
// itself, for the two calls of grpc.health.v1 (unary Check and the
// server-streaming Watch).
//
// It exists for memory. A grpc-go ClientConn per backend holds seven
// goroutines while a Watch stream is open (three callback serializers,
// the transport's reader and writer, the stream's context watcher and the
// caller), about 56 KiB of stacks before any buffer: at 10,000 watched
// endpoints that was 78 KiB per endpoint. A Conn holds one goroutine per
// TCP connection (its frame reader); writes happen in the caller's
// goroutine, and a stream's context is watched with context.AfterFunc,
// which costs no goroutine until it fires.
//
// What it does not do, because health probes never need it: client
// streaming, compression, retries and name resolution. TLS is the
// dialer's (Options.Dial). A request message
// is sent whole, in one write with its HEADERS.
package probeconn

import (
	"context"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
)

// Options configure a Conn.
type Options struct {
	// Dial opens the connection to address (keepalive, socket options and
	// a TLS handshake are the dialer's business). Required.
	Dial func(ctx context.Context, address string) (net.Conn, error)
	// TLS says that Dial's connections are TLS: requests say :scheme
	// https.
	TLS bool
	// UserAgent is sent as user-agent.
	UserAgent string
	// MaxRecvMessage caps one received message, in bytes (default 4 MiB).
	MaxRecvMessage int
	// MaxHeaderList caps the decoded size of one header block, in bytes
	// (default 64 KiB).
	MaxHeaderList uint32
	// Window is the flow-control window advertised for each stream
	// (default and minimum 64 KiB).
	Window uint32
}

const (
	defaultMaxRecvMessage = 4 << 20
	defaultMaxHeaderList  = 64 << 10
	minWindow             = 65535
	// maxWindow is the largest flow-control window HTTP/2 allows.
	maxWindow = 1<<31 - 1
)

// Conn is a lazily connected channel to one backend address. The first
// call dials; a connection that the server drains (GOAWAY) is replaced by
// a new one on the next call, while the calls already on it finish there.
// A connection that fails leaves the Conn in TRANSIENT_FAILURE and the
// next call dials again. Conn is safe for concurrent use.
type Conn struct {
	address string
	opts    Options

	state   atomic.Int32   // connectivity.State
	dialing chan struct{}  // one-slot lock held while dialing
	readers sync.WaitGroup // one count per transport's reader goroutine

	mu     sync.Mutex
	cur    *transport // the transport new calls use; nil when there is none
	all    map[*transport]struct{}
	closed bool
}

var _ grpc.ClientConnInterface = (*Conn)(nil)

// New returns a Conn to address; it does not dial until the first call.
func New(address string, opts Options) *Conn {
	if opts.MaxRecvMessage <= 0 {
		opts.MaxRecvMessage = defaultMaxRecvMessage
	}
	if opts.MaxHeaderList == 0 {
		opts.MaxHeaderList = defaultMaxHeaderList
	}
	opts.Window = max(opts.Window, minWindow)
	c := &Conn{address: address, opts: opts, dialing: make(chan struct{}, 1), all: map[*transport]struct{}{}}
	c.state.Store(int32(connectivity.Idle))
	return c
}

// GetState returns the state of the Conn, with grpc-go's meanings: IDLE
// (no connection, none failed), CONNECTING, READY, TRANSIENT_FAILURE (the
// latest dial or connection failed) or SHUTDOWN (closed). It takes no lock.
func (c *Conn) GetState() connectivity.State {
	return connectivity.State(c.state.Load())
}

// Close closes every connection, failing the calls on them with
// CANCELED, and waits for their reader goroutines to return.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.state.Store(int32(connectivity.Shutdown))
	all := make([]*transport, 0, len(c.all))
	for t := range c.all {
		all = append(all, t)
	}
	c.cur = nil
	c.mu.Unlock()
	for _, t := range all {
		t.close(errConnClosing)
	}
	c.readers.Wait()
	return nil
}

// transport returns the connection new calls go on, dialing one if there
// is none.
func (c *Conn) transport(ctx context.Context) (*transport, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errConnClosing
		}
		if t := c.cur; t != nil {
			c.mu.Unlock()
			return t, nil
		}
		c.mu.Unlock()

		select {
		case c.dialing <- struct{}{}:
		case <-ctx.Done():
			return nil, contextError(ctx.Err())
		}
		t, err := c.dialLocked(ctx)
		<-c.dialing
		if t != nil || err != nil {
			return t, err
		}
		// Another caller's dial finished while this one waited for the
		// lock: use its connection.
	}
}

// dialLocked dials a transport; the caller holds c.dialing. It returns
// nil, nil if a transport appeared meanwhile.
func (c *Conn) dialLocked(ctx context.Context) (*transport, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errConnClosing
	}
	if c.cur != nil {
		c.mu.Unlock()
		return nil, nil
	}
	c.state.Store(int32(connectivity.Connecting))
	c.mu.Unlock()

	nc, err := c.opts.Dial(ctx, c.address)
	if err != nil {
		c.setStateUnlessClosed(connectivity.TransientFailure)
		if ctx.Err() != nil {
			return nil, contextError(ctx.Err())
		}
		return nil, newError(KindRefused, codes.Unavailable, err, "connection error: transport: error while dialing %s: %v", c.address, err)
	}
	t := newTransport(c, nc)
	// The preface goes out before the reader starts: the reader answers
	// the server's SETTINGS, and an answer before our preface is a
	// protocol error the server resets the connection for.
	if err := t.writePreface(); err != nil {
		_ = nc.Close()
		c.setStateUnlessClosed(connectivity.TransientFailure)
		return nil, connectionError(err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		_ = nc.Close()
		return nil, errConnClosing
	}
	c.all[t] = struct{}{}
	c.cur = t
	c.readers.Add(1)
	c.state.Store(int32(connectivity.Ready))
	c.mu.Unlock()
	go t.readLoop()
	return t, nil
}

func (c *Conn) setStateUnlessClosed(s connectivity.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.state.Store(int32(s))
	}
}

// retire stops t from taking new calls: after a GOAWAY (next state IDLE,
// as grpc-go's) or a failure (TRANSIENT_FAILURE).
func (c *Conn) retire(t *transport, next connectivity.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != t {
		return
	}
	c.cur = nil
	if !c.closed {
		c.state.Store(int32(next))
	}
}

// exited is called by t's reader as it returns.
func (c *Conn) exited(t *transport) {
	c.mu.Lock()
	delete(c.all, t)
	if c.cur == t {
		c.cur = nil
		if !c.closed {
			c.state.Store(int32(connectivity.TransientFailure))
		}
	}
	c.mu.Unlock()
	c.readers.Done()
}

// Invoke makes a unary call: one request, exactly one response.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	s, err := c.NewStream(ctx, &grpc.StreamDesc{}, method)
	if err != nil {
		return err
	}
	if err := s.SendMsg(args); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	if err := s.RecvMsg(reply); err != nil {
		return err
	}
	return s.(*stream).finishUnary()
}

// NewStream starts a call of method. Only server streaming and unary
// shapes are supported: the client sends one message.
func (c *Conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	if desc.ClientStreams {
		return nil, newError(KindMisuse, codes.Unimplemented, nil, "probeconn: %s streams from the client, which health probes never do", method)
	}
	if err := ctx.Err(); err != nil {
		return nil, contextError(err)
	}
	return newStream(ctx, c, method), nil
}
