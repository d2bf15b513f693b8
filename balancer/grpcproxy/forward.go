package grpcproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/vigil-proxy/vigil/balancer"
)

// bidi describes every forwarded call to grpc-go's client as a
// bidirectional stream: the proxy does not know the method's shape, and
// a bidi stream carries unary and one-sided streaming calls unchanged.
var bidi = &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}

// errEndpointClosed is why the streams of an endpoint that was closed
// (removed from its cluster, drain deadline passed) are cut.
var errEndpointClosed = errors.New("endpoint closed")

// call is one forwarded RPC. The handler goroutine owns it and pumps
// responses; the request pump goroutine reads only ss, cs, req and cancel.
type call struct {
	ss     grpc.ServerStream
	cs     grpc.ClientStream
	ep     *balancer.Endpoint
	cancel context.CancelCauseFunc
	// req and resp are reused for every message of their direction: grpc-go
	// takes the bytes out of a frame before the next receive.
	req, resp frame
	opts      [6]grpc.CallOption
}

// forward is the grpc.Server's handler for every method the proxy does not
// serve itself.
func (p *Proxy) forward(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "vigil: no method on the server stream")
	}
	cl := p.cluster.Load()
	if cl == nil {
		return status.Error(codes.Unavailable, "vigil: the listener has no cluster")
	}
	var start time.Time
	if p.metrics != nil {
		start = time.Now()
	}
	c := &call{ss: ss}
	inCtx := ss.Context()
	ctx, cancel := context.WithCancelCause(inCtx)
	c.cancel = cancel
	defer cancel(context.Canceled)

	// The incoming metadata is a private copy: drop what grpc-go's client
	// sends by itself, so each header reaches the backend exactly once.
	// (Reserved headers such as :authority, user-agent, content-type, te
	// and grpc-timeout are skipped by grpc-go itself; the deadline travels
	// in ctx, re-encoded with the time left.)
	md, _ := metadata.FromIncomingContext(inCtx)
	delete(md, "grpc-accept-encoding")
	outCtx := metadata.NewOutgoingContext(ctx, md)

	cs, err := p.open(outCtx, c, cl, method)
	if err != nil {
		if p.metrics != nil {
			p.metrics.RPCFinished(cl.Name(), "", codeName(status.Code(err)), time.Since(start))
		}
		return err
	}
	c.cs = cs
	ep := c.ep
	defer ep.Release()
	if p.metrics != nil {
		p.metrics.RPCStarted(cl.Name(), ep.Address())
	}
	// Cut the stream when its endpoint is closed for good.
	stopCut := context.AfterFunc(p.endpointContext(ep), func() { cancel(errEndpointClosed) })
	defer stopCut()

	p.pumps.Add(1)
	go c.pumpRequests(p)

	err = c.pumpResponses()
	if err != nil && errors.Is(context.Cause(ctx), errEndpointClosed) {
		err = status.Errorf(codes.Unavailable, "vigil: endpoint %s was removed from cluster %s", ep.Address(), cl.Name())
	}
	if p.metrics != nil {
		p.metrics.RPCFinished(cl.Name(), ep.Address(), codeName(status.Code(err)), time.Since(start))
	}
	return err
}

// open starts the backend call on a picked endpoint. An endpoint that
// cannot be reached (grpc-go fails NewStream with UNAVAILABLE before any
// byte of the RPC went out: connection refused, reset while connecting, or
// its connection is in transient failure) is skipped for another one, up to
// p.retries times. Once NewStream succeeded the RPC is never replayed.
func (p *Proxy) open(ctx context.Context, c *call, cl *balancer.Cluster, method string) (grpc.ClientStream, error) {
	opts := p.callOptions(c)
	var tried [maxRetries + 1]*balancer.Endpoint
	attempts := 0
	var lastErr error
	// Extra picks let a round-robin or random picker move past endpoints
	// already tried; the bound keeps a one-endpoint cluster from spinning.
	for picks := 0; attempts <= p.retries && picks < 2*(p.retries+2); picks++ {
		ep := cl.Pick()
		if ep == nil {
			break
		}
		if seen(tried[:attempts], ep) {
			continue
		}
		tried[attempts] = ep
		attempts++
		conn := ep.Conn()
		if conn == nil {
			lastErr = status.Errorf(codes.Unavailable, "vigil: endpoint %s of cluster %s has no gRPC connection", ep.Address(), cl.Name())
			continue
		}
		ep.Acquire()
		cs, err := conn.NewStream(ctx, bidi, method, opts...)
		if err == nil {
			c.ep = ep
			return cs, nil
		}
		ep.Release()
		lastErr = err
		if !unreachable(ctx, err) {
			return nil, err
		}
		if p.metrics != nil {
			p.metrics.RPCRetried(cl.Name(), ep.Address())
		}
		p.log.Debug("endpoint unreachable, trying another", "cluster", cl.Name(), "endpoint", ep.Address(), "error", err)
	}
	if lastErr != nil {
		// Every endpoint tried was unreachable: UNAVAILABLE (also when the
		// last one's connection was closed under us, which grpc-go reports
		// as CANCELLED although the client cancelled nothing).
		return nil, status.Errorf(codes.Unavailable, "vigil: no reachable endpoint in cluster %s (tried %d): %s",
			cl.Name(), attempts, status.Convert(lastErr).Message())
	}
	return nil, status.Errorf(codes.Unavailable, "no healthy upstream in cluster %s", cl.Name())
}

// unreachable tells whether a NewStream error means the endpoint could not
// be reached, so that the RPC, of which nothing was sent, may go elsewhere:
// UNAVAILABLE (refused, reset, transient failure), or CANCELLED while the
// client's own context is fine (the endpoint's connection was closed under
// us: it was removed between the pick and the call).
func unreachable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return true
	}
	return false
}

func seen(tried []*balancer.Endpoint, ep *balancer.Endpoint) bool {
	for _, t := range tried {
		if t == ep {
			return true
		}
	}
	return false
}

// pumpRequests forwards the client's messages and half-close to the
// backend. It runs on its own goroutine, counted by p.pumps: it usually
// ends before the handler, but when the backend finishes first it may still
// be waiting in ss.RecvMsg, which returns as soon as grpc-go closes the
// client's stream after the handler returned.
func (c *call) pumpRequests(p *Proxy) {
	defer p.pumps.Done()
	for {
		if err := c.ss.RecvMsg(&c.req); err != nil {
			if err == io.EOF {
				// CloseSend runs after the last SendMsg, on this goroutine:
				// grpc-go forbids the two concurrently.
				_ = c.cs.CloseSend()
				return
			}
			// The client cancelled or sent something invalid (grpc-go has
			// answered it already): abandon the backend call.
			c.cancel(err)
			return
		}
		if err := c.cs.SendMsg(&c.req); err != nil {
			// The backend call ended; its status reaches the client
			// through pumpResponses.
			c.req.free()
			return
		}
	}
}

// pumpResponses forwards the backend's headers, messages, trailers and
// status to the client, and returns the status for the handler to send.
func (c *call) pumpResponses() error {
	// Headers go out as soon as the backend sends them, not with the first
	// message: a backend that fails after sending headers keeps them.
	// Header returns nil for a trailers-only answer, which then stays
	// trailers-only.
	if hdr, _ := c.cs.Header(); hdr != nil {
		if err := c.ss.SendHeader(hdr); err != nil {
			c.cancel(err)
			return err
		}
	}
	var err error
	for {
		if err = c.cs.RecvMsg(&c.resp); err != nil {
			break
		}
		if err = c.ss.SendMsg(&c.resp); err != nil {
			// The client is gone or the message is over the listener's
			// limit (grpc-go already sent RESOURCE_EXHAUSTED).
			c.resp.free()
			c.cancel(err)
			return err
		}
	}
	c.ss.SetTrailer(c.cs.Trailer())
	if err == io.EOF {
		return nil
	}
	return err
}

// variantKey selects cached call options beyond the base ones.
type variantKey struct {
	compressor string // the client's grpc-encoding, mirrored to the backend
	subtype    string // the client's content subtype (application/grpc+X)
}

// maxVariants bounds the cache of call-option variants (compressors are
// limited to registered ones, but subtypes are chosen by clients).
const maxVariants = 16

// callOptions returns the backend call's options: the passthrough codec
// and message limits, plus the client's compression (so a gzip request
// reaches the backend gzipped, and the backend answers gzipped, which
// grpc-go's server mirrors to the client) and content subtype. The common
// variants are cached so that no RPC allocates options.
func (p *Proxy) callOptions(c *call) []grpc.CallOption {
	var key variantKey
	if st, ok := grpc.ServerTransportStreamFromContext(c.ss.Context()).(interface {
		RecvCompress() string
		ContentSubtype() string
	}); ok {
		key.compressor = st.RecvCompress()
		if key.compressor == "identity" {
			key.compressor = ""
		}
		key.subtype = st.ContentSubtype()
		if key.subtype == "proto" {
			// "application/grpc" and "application/grpc+proto" mean the same;
			// keep what the client sent only when it is something else.
			key.subtype = ""
		}
	}
	if key == (variantKey{}) {
		return p.callOpts
	}
	if opts, ok := (*p.variants.Load())[key]; ok {
		return opts
	}
	opts := append(c.opts[:0], p.callOpts...)
	if key.compressor != "" {
		opts = append(opts, grpc.UseCompressor(key.compressor))
	}
	if key.subtype != "" {
		opts = append(opts, grpc.CallContentSubtype(key.subtype))
	}
	p.variantsMu.Lock()
	defer p.variantsMu.Unlock()
	old := *p.variants.Load()
	if len(old) < maxVariants {
		cached := append([]grpc.CallOption(nil), opts...)
		m := make(map[variantKey][]grpc.CallOption, len(old)+1)
		for k, v := range old {
			m[k] = v
		}
		m[key] = cached
		p.variants.Store(&m)
	}
	return opts
}

// endpointContext returns a context that is cancelled when ep is closed,
// watched by one goroutine per endpoint that the proxy owns.
func (p *Proxy) endpointContext(ep *balancer.Endpoint) context.Context {
	if w, ok := p.watchers.Load(ep); ok {
		return w.(context.Context)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if w, loaded := p.watchers.LoadOrStore(ep, ctx); loaded {
		cancel()
		return w.(context.Context)
	}
	p.watchersWG.Add(1)
	go func() {
		defer p.watchersWG.Done()
		defer cancel()
		select {
		case <-ep.Closed():
			// Streams still open are cut; the entry goes so a closed
			// endpoint is not remembered forever.
			p.watchers.Delete(ep)
		case <-p.done:
		}
	}()
	return ctx
}

// codeNames are the canonical gRPC code names used in metrics and logs.
var codeNames = [...]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

// codeName is the canonical name of c, e.g. "UNAVAILABLE".
func codeName(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("CODE_%d", uint32(c))
}
