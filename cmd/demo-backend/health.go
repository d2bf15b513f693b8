package main

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// fullHealth is grpc-go's standard health server (Check, Watch, List) with
// the backend's -health-delay stall in front of Check and Watch, and Watch
// streams that end when the backend stops.
type fullHealth struct {
	*health.Server
	b *backend
}

func (h fullHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return h.b.check(ctx, req)
}

func (h fullHealth) Watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	return h.b.watch(req, stream)
}

// checkOnlyHealth answers Check only: Watch and List are UNIMPLEMENTED, as
// with health servers written before Watch existed.
type checkOnlyHealth struct {
	healthpb.UnimplementedHealthServer
	b *backend
}

func (h checkOnlyHealth) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return h.b.check(ctx, req)
}

func (b *backend) check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if err := b.stall(ctx); err != nil {
		return nil, err
	}
	return b.health.Check(ctx, req)
}

// watch serves a Watch stream from the standard health server. The stream's
// context is also cancelled when the backend stops, because a Watch never
// ends on its own and GracefulStop would otherwise wait out its bound for it.
func (b *backend) watch(req *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	if err := b.stall(stream.Context()); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stopWatching := context.AfterFunc(b.stopping, cancel)
	defer stopWatching()

	ws := &watchStream{Health_WatchServer: stream, ctx: ctx}
	err := b.health.Watch(req, ws)
	if b.stopping.Err() == nil {
		return err
	}
	// Stopping: the health server was shut down (every status NOT_SERVING)
	// before b.stopping was cancelled, but Watch may have picked the
	// cancellation over that update. Make sure the watcher hears it.
	if !ws.sent || ws.last != healthpb.HealthCheckResponse_NOT_SERVING {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING}); err != nil {
			return err
		}
	}
	return status.Error(codes.Unavailable, "backend shutting down")
}

// watchStream is a Watch stream with its own context that remembers the last
// status sent. A pointer, since the health server uses it as a map key.
type watchStream struct {
	healthpb.Health_WatchServer
	ctx  context.Context
	sent bool
	last healthpb.HealthCheckResponse_ServingStatus
}

func (w *watchStream) Context() context.Context { return w.ctx }

func (w *watchStream) Send(resp *healthpb.HealthCheckResponse) error {
	w.sent, w.last = true, resp.GetStatus()
	return w.Health_WatchServer.Send(resp)
}

// stall sleeps for -health-delay, or until the call is cancelled or the
// backend stops.
func (b *backend) stall(ctx context.Context) error {
	if b.opts.healthDelay <= 0 {
		return nil
	}
	timer := time.NewTimer(b.opts.healthDelay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-b.stopping.Done():
		return status.Error(codes.Unavailable, "backend shutting down")
	}
}
