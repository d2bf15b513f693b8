package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // accept gzip requests, answer response_compressed
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/vigil-proxy/vigil/internal/ordersvc"
)

const healthMethodPrefix = "/grpc.health.v1.Health/"

// backend is one demo gRPC server and the health statuses it reports.
type backend struct {
	opts options
	id   string
	log  *slog.Logger
	grpc *grpc.Server

	// health holds the statuses in every mode (it is simply not registered
	// with -health=none): it is the single source of truth for Check, Watch,
	// the control endpoint and the logs.
	health *health.Server
	// mu serializes status changes so the logged previous status is exact.
	mu sync.Mutex

	// stopping is cancelled when shutdown begins, after the health server
	// has turned every status NOT_SERVING: it ends Watch streams and stalls.
	stopping     context.Context
	stopStopping context.CancelFunc

	rpcs, healthRPCs atomic.Uint64 // served since the last -v report

	// load is what the ORCA service reports (orca.go); nil without -orca.
	load *loadState
}

// newBackend builds the gRPC server for opts. id fills server_id; logs go
// to logger, tagged with the id.
func newBackend(opts options, id string, logger *slog.Logger, extra ...grpc.ServerOption) *backend {
	b := &backend{
		opts:   opts,
		id:     id,
		log:    logger.With("id", id),
		health: health.NewServer(),
	}
	b.stopping, b.stopStopping = context.WithCancel(context.Background())
	for _, name := range opts.services {
		b.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	b.grpc = grpc.NewServer(append([]grpc.ServerOption{
		// Room for the largest payload the TestService serves, plus framing.
		grpc.MaxRecvMsgSize(maxPayload + maxPayloadSlack),
		grpc.MaxSendMsgSize(maxPayload + maxPayloadSlack),
		grpc.ChainUnaryInterceptor(b.countUnary),
		grpc.ChainStreamInterceptor(b.countStream),
	}, extra...)...)
	testpb.RegisterTestServiceServer(b.grpc, &testService{id: id})
	// A second service, so that the demo can show one listener routing two.
	ordersvc.Register(b.grpc, id, nil)
	switch opts.health {
	case healthFull:
		healthpb.RegisterHealthServer(b.grpc, fullHealth{Server: b.health, b: b})
	case healthCheckOnly:
		healthpb.RegisterHealthServer(b.grpc, checkOnlyHealth{b: b})
	case healthNone:
	}
	if opts.orca {
		b.load = newLoadState(opts.utilization, opts.qps)
		// Only a missing recorder fails, and there is one.
		_ = registerORCA(b.grpc, b.load.smr, opts.orcaMinInterval)
	}
	return b
}

// serve serves gRPC on lis (and the control endpoint on control, if not nil)
// until ctx is done, then shuts down gracefully. Each value received on
// toggles flips the whole-server status (run sends SIGUSR1 there). serve owns and stops
// every goroutine it starts, and closes both listeners.
func (b *backend) serve(ctx context.Context, lis, control net.Listener, toggles <-chan os.Signal) error {
	attrs := []any{"addr", lis.Addr().String(), "health", string(b.opts.health), "services", b.serviceList(), "health_names", b.healthNames()}
	if b.load != nil {
		u, q := b.load.get()
		attrs = append(attrs, "orca", true, "utilization", u, "qps", q)
	}
	b.log.Info("backend started", attrs...)

	serveErr := make(chan error, 1)
	go func() { serveErr <- b.grpc.Serve(lis) }()

	var ctlServer *http.Server
	ctlErr := make(chan error, 1)
	if control != nil {
		ctlServer = &http.Server{
			Handler:           b.controlHandler(),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelWarn),
		}
		b.log.Info("control endpoint started", "addr", control.Addr().String())
		go func() { ctlErr <- ctlServer.Serve(control) }()
	}

	// Helpers stop with helperCtx; serve waits for them before returning.
	helperCtx, stopHelpers := context.WithCancel(ctx)
	var helpers sync.WaitGroup
	if b.opts.scheduled() {
		helpers.Go(func() { b.runSchedule(helperCtx) })
	}
	if b.opts.verbose {
		helpers.Go(func() { b.reportRates(helperCtx) })
	}
	helpers.Go(func() {
		for {
			select {
			case <-helperCtx.Done():
				return
			case <-toggles:
				b.toggle("SIGUSR1")
			}
		}
	})

	var err error
	grpcDone, ctlDone := false, control == nil
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		grpcDone = true
		err = fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
	case err = <-ctlErr:
		ctlDone = true
		err = fmt.Errorf("serve control endpoint on %s: %w", control.Addr(), err)
	}
	stopHelpers()
	helpers.Wait()
	b.shutdown(ctlServer)
	// Wait for the serving goroutines; after a stop they end without error.
	if !grpcDone {
		<-serveErr
	}
	if !ctlDone {
		<-ctlErr
	}
	return err
}

// shutdown reports NOT_SERVING, waits -drain-delay so a proxy can drain,
// ends Watch streams, then stops gracefully within -grace.
func (b *backend) shutdown(ctlServer *http.Server) {
	b.mu.Lock()
	b.health.Shutdown() // every status NOT_SERVING; later changes are ignored
	b.mu.Unlock()
	b.log.Info("shutting down: health NOT_SERVING", "drain_delay", b.opts.drainDelay, "grace", b.opts.grace)
	if b.opts.drainDelay > 0 {
		time.Sleep(b.opts.drainDelay)
	}
	b.stopStopping()

	stopped := make(chan struct{})
	go func() {
		b.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(b.opts.grace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		b.log.Warn("grace period over: cutting in-flight RPCs", "grace", b.opts.grace)
		b.grpc.Stop()
		<-stopped
	}
	if ctlServer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := ctlServer.Shutdown(ctx); err != nil {
			ctlServer.Close()
		}
	}
	b.log.Info("backend stopped")
}

// setStatus sets service's status and logs the change; by says who asked.
// It returns the previous status (SERVICE_UNKNOWN for a new service name).
func (b *backend) setStatus(service string, st healthpb.HealthCheckResponse_ServingStatus, by string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopping.Err() != nil {
		return 0, errors.New("backend is shutting down: statuses stay NOT_SERVING")
	}
	previous := b.statusLocked(service)
	b.health.SetServingStatus(service, st)
	level := slog.LevelInfo
	if st != healthpb.HealthCheckResponse_SERVING {
		level = slog.LevelWarn
	}
	b.log.Log(context.Background(), level, "health status changed",
		"service", service, "status", st.String(), "previous", previous.String(), "by", by)
	return previous, nil
}

// toggle flips the whole-server status "": SERVING becomes NOT_SERVING and
// anything else becomes SERVING.
func (b *backend) toggle(by string) {
	if b.opts.health == healthNone {
		b.log.Warn("no health service (-health=none): nothing to toggle", "by", by)
		return
	}
	b.mu.Lock()
	next := healthpb.HealthCheckResponse_SERVING
	if b.statusLocked("") == healthpb.HealthCheckResponse_SERVING {
		next = healthpb.HealthCheckResponse_NOT_SERVING
	}
	b.mu.Unlock()
	// Another change may slip in between; toggles are for humans and tests
	// that do one thing at a time, so the last writer winning is fine.
	if _, err := b.setStatus("", next, by); err != nil {
		b.log.Warn("toggle ignored", "by", by, "err", err)
	}
}

func (b *backend) statusLocked(service string) healthpb.HealthCheckResponse_ServingStatus {
	resp, err := b.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	}
	return resp.GetStatus()
}

// statuses returns every registered service's status.
func (b *backend) statuses() map[string]string {
	resp, err := b.health.List(context.Background(), &healthpb.HealthListRequest{})
	if err != nil { // only when there are more services than List allows
		return map[string]string{"": b.statusLocked("").String()}
	}
	out := make(map[string]string, len(resp.GetStatuses()))
	for name, st := range resp.GetStatuses() {
		out[name] = st.GetStatus().String()
	}
	return out
}

// serviceList names the extra health services for the start-up log line.
// serviceList names the gRPC services the backend serves.
func (b *backend) serviceList() string {
	var names []string
	for name := range b.grpc.GetServiceInfo() {
		names = append(names, name)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// healthNames names the extra health service names of -service.
func (b *backend) healthNames() string {
	if len(b.opts.services) == 0 {
		return "(none)"
	}
	return strings.Join(b.opts.services, ",")
}

// runSchedule flips "" NOT_SERVING at -flip-after for -flip-for, repeating
// every -flip-every. Times are measured from the start so they do not drift.
func (b *backend) runSchedule(ctx context.Context) {
	start := time.Now()
	for next := b.opts.flipAfter; ; next += b.opts.flipEvery {
		if !sleepUntil(ctx, start.Add(next)) {
			return
		}
		if _, err := b.setStatus("", healthpb.HealthCheckResponse_NOT_SERVING, "schedule"); err != nil {
			return
		}
		if b.opts.flipFor == 0 {
			return
		}
		if !sleepUntil(ctx, start.Add(next+b.opts.flipFor)) {
			return
		}
		if _, err := b.setStatus("", healthpb.HealthCheckResponse_SERVING, "schedule"); err != nil {
			return
		}
		if b.opts.flipEvery == 0 {
			return
		}
	}
}

// sleepUntil waits until t; false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reportRates logs the RPCs served in each second.
func (b *backend) reportRates(ctx context.Context) {
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			b.log.Info("served", "rpcs", b.rpcs.Swap(0), "health_rpcs", b.healthRPCs.Swap(0))
		}
	}
}

func (b *backend) count(method string) {
	if strings.HasPrefix(method, healthMethodPrefix) {
		b.healthRPCs.Add(1)
	} else {
		b.rpcs.Add(1)
	}
}

func (b *backend) countUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	b.count(info.FullMethod)
	return resp, err
}

func (b *backend) countStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	b.count(info.FullMethod)
	return err
}
