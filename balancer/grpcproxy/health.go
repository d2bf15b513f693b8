package grpcproxy

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthService answers grpc.health.v1.Health on the listener from the
// caller's shared health.Server (Check and List as they are). Watch streams
// are long-lived: they end with UNAVAILABLE once shutdown begins, so they
// do not hold the graceful stop open until shutdown.timeout (the caller
// has set NOT_SERVING before, and watchers have been told).
type healthService struct {
	*health.Server
	stopping context.Context
}

func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	stop := context.AfterFunc(h.stopping, cancel)
	defer stop()
	err := h.Server.Watch(req, watchStream{ServerStreamingServer: stream, ctx: ctx})
	if h.stopping.Err() != nil {
		return status.Error(codes.Unavailable, "vigil is shutting down")
	}
	return err
}

// watchStream is a Watch stream whose context also ends at shutdown.
type watchStream struct {
	grpc.ServerStreamingServer[healthpb.HealthCheckResponse]
	ctx context.Context
}

func (w watchStream) Context() context.Context { return w.ctx }
