package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/vigil-proxy/vigil/internal/ordersvc"
)

// caller makes one UnaryCall and returns the server_id that answered.
type caller interface {
	call(ctx context.Context) (serverID string, err error)
	Close() error
}

// newCaller returns the caller for opts.mode.
func newCaller(opts options) (caller, error) {
	req := &testpb.SimpleRequest{
		FillServerId: true,
		ResponseSize: int32(opts.size),
		Payload:      &testpb.Payload{Body: make([]byte, opts.size)},
	}
	switch opts.mode {
	case modeTCP:
		// Fail now on a target gRPC cannot parse, not on every call.
		conn, err := dialTarget(opts.target, opts.creds)
		if err != nil {
			return nil, err
		}
		conn.Close()
		return &connPerCall{target: opts.target, creds: opts.creds, req: req}, nil
	default:
		conn, err := dialTarget(opts.target, opts.creds)
		if err != nil {
			return nil, err
		}
		return &sharedConn{conn: conn, client: testpb.NewTestServiceClient(conn), req: req, what: opts.call}, nil
	}
}

// What -call makes calls to.
const (
	callTest   = "test"   // grpc.testing.TestService/UnaryCall
	callOrders = "orders" // orders.v1.Orders/Get (internal/ordersvc)
	callBoth   = "both"   // the two in turn, tallied as test/ID and orders/ID
)

// dialTarget makes a client of target, over TLS with creds (nil:
// plaintext h2c).
func dialTarget(target string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithNoProxy(), // vigil is the proxy under test; never go around it
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxSize+maxSizeSlack),
			grpc.MaxCallSendMsgSize(maxSize+maxSizeSlack),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("gRPC client for %s: %w", target, err)
	}
	return conn, nil
}

// sharedConn sends every call over one ClientConn: a grpc listener balances
// each RPC, so the spread shows per-RPC balancing.
type sharedConn struct {
	conn   *grpc.ClientConn
	client testpb.TestServiceClient
	req    *testpb.SimpleRequest // read-only, shared by concurrent calls
	what   string                // -call
	n      atomic.Uint64         // calls made, for -call both
}

func (s *sharedConn) call(ctx context.Context) (string, error) {
	switch s.what {
	case callOrders:
		return s.orders(ctx)
	case callBoth:
		if s.n.Add(1)%2 == 0 {
			id, err := s.orders(ctx)
			return "orders/" + id, err
		}
		resp, err := s.client.UnaryCall(ctx, s.req)
		return "test/" + resp.GetServerId(), err
	}
	resp, err := s.client.UnaryCall(ctx, s.req)
	return resp.GetServerId(), err
}

func (s *sharedConn) orders(ctx context.Context) (string, error) {
	resp := new(testpb.SimpleResponse)
	err := s.conn.Invoke(ctx, ordersvc.Get, s.req, resp)
	return resp.GetServerId(), err
}

func (s *sharedConn) Close() error { return s.conn.Close() }

// connPerCall opens a new connection for every call and closes it after: a
// tcp listener balances per connection, so only new connections spread.
type connPerCall struct {
	target string
	creds  credentials.TransportCredentials
	req    *testpb.SimpleRequest
}

func (c *connPerCall) call(ctx context.Context) (string, error) {
	conn, err := dialTarget(c.target, c.creds)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	resp, err := testpb.NewTestServiceClient(conn).UnaryCall(ctx, c.req)
	return resp.GetServerId(), err
}

func (c *connPerCall) Close() error { return nil }

// sendTraffic starts calls at rate per second on average (the first at
// once) until ctx is done. Arrivals are random (exponential gaps, as from
// many independent users): two clients at the same steady rate would
// otherwise alternate in lockstep on vigil's round robin, and each would
// see only some of the backends. At most opts.concurrency calls are in
// flight; each outcome is recorded. It returns once every call it started has finished; calls
// are not cancelled by ctx, only bounded by opts.timeout, so a final report
// does not count calls cut short by the client itself.
func sendTraffic(ctx context.Context, c caller, opts options, rec *recorder) {
	mean := float64(time.Second) / opts.rate
	next := time.NewTimer(0)
	defer next.Stop()
	<-next.C
	inFlight := make(chan struct{}, opts.concurrency)
	callCtx := context.WithoutCancel(ctx)
	var calls sync.WaitGroup
	defer calls.Wait()
	for {
		select {
		case inFlight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		calls.Go(func() {
			defer func() { <-inFlight }()
			ctx, cancel := context.WithTimeout(callCtx, opts.timeout)
			defer cancel()
			rec.record(c.call(ctx))
		})
		next.Reset(time.Duration(rand.ExpFloat64() * mean))
		select {
		case <-next.C:
		case <-ctx.Done():
			return
		}
	}
}
