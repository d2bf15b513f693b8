// Package interoptest runs grpc-go's interop test cases (the functions
// behind the official interop client, package google.golang.org/grpc/interop)
// against any target, and starts real interop servers on loopback. It is
// meant for tests: vigil's gRPC listener must pass every case unchanged,
// in-process (balancer/grpcproxy) and as the real binary (integration/).
//
// The interop functions report failure through grpclog's Fatal, which would
// exit the whole test binary. Importing this package installs a grpclog
// logger that turns a Fatal into a failure of the test case running at the
// time, so one failing case is reported by name and the others still run.
package interoptest

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip" // interop servers answer gzip requests
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Case is one interop test case by its official name.
type Case struct {
	Name string
	// Run performs the case on cc; it fails the current test through
	// grpclog's Fatal (see the package doc).
	Run func(ctx context.Context, cc *grpc.ClientConn, target string, dialOpts []grpc.DialOption)
}

// Soak settings: small so the suite stays fast, generous per-iteration
// latency so a loaded 2-core machine under -race does not fail them.
const (
	soakIterations        = 10
	soakMaxLatency        = 10 * time.Second
	soakOverallTimeout    = 2 * time.Minute
	soakRequestSize       = 271828
	soakResponseSize      = 314159
	perCaseTimeoutDefault = 2 * time.Minute
)

// Cases lists the interop cases vigil must pass, in the official client's
// order.
func Cases() []Case {
	tc := func(f func(context.Context, testgrpc.TestServiceClient, ...grpc.CallOption)) func(context.Context, *grpc.ClientConn, string, []grpc.DialOption) {
		return func(ctx context.Context, cc *grpc.ClientConn, _ string, _ []grpc.DialOption) {
			f(ctx, testgrpc.NewTestServiceClient(cc))
		}
	}
	return []Case{
		{"empty_unary", tc(interop.DoEmptyUnaryCall)},
		{"large_unary", tc(interop.DoLargeUnaryCall)},
		{"client_streaming", tc(interop.DoClientStreaming)},
		{"server_streaming", tc(interop.DoServerStreaming)},
		{"ping_pong", tc(interop.DoPingPong)},
		{"empty_stream", tc(interop.DoEmptyStream)},
		{"timeout_on_sleeping_server", tc(interop.DoTimeoutOnSleepingServer)},
		{"cancel_after_begin", tc(interop.DoCancelAfterBegin)},
		{"cancel_after_first_response", tc(interop.DoCancelAfterFirstResponse)},
		{"status_code_and_message", tc(interop.DoStatusCodeAndMessage)},
		{"special_status_message", tc(interop.DoSpecialStatusMessage)},
		{"unimplemented_method", func(ctx context.Context, cc *grpc.ClientConn, _ string, _ []grpc.DialOption) {
			interop.DoUnimplementedMethod(ctx, cc)
		}},
		{"unimplemented_service", func(ctx context.Context, cc *grpc.ClientConn, _ string, _ []grpc.DialOption) {
			interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
		}},
		{"custom_metadata", tc(interop.DoCustomMetadata)},
		{"rpc_soak", func(ctx context.Context, cc *grpc.ClientConn, target string, _ []grpc.DialOption) {
			cfg := soakConfig(target)
			cfg.ChannelForTest = func() (*grpc.ClientConn, func()) { return cc, func() {} }
			interop.DoSoakTest(ctx, cfg)
		}},
		{"channel_soak", func(ctx context.Context, _ *grpc.ClientConn, target string, dialOpts []grpc.DialOption) {
			cfg := soakConfig(target)
			cfg.ChannelForTest = func() (*grpc.ClientConn, func()) {
				cc, err := grpc.NewClient(target, dialOpts...)
				if err != nil {
					// grpclog's Fatal is trapped: it fails the current case.
					grpclog.Fatalf("channel_soak: new client for %s: %v", target, err)
				}
				return cc, func() { _ = cc.Close() }
			}
			interop.DoSoakTest(ctx, cfg)
		}},
	}
}

func soakConfig(target string) interop.SoakTestConfig {
	return interop.SoakTestConfig{
		RequestSize:                      soakRequestSize,
		ResponseSize:                     soakResponseSize,
		PerIterationMaxAcceptableLatency: soakMaxLatency,
		OverallTimeout:                   soakOverallTimeout,
		ServerAddr:                       target,
		NumWorkers:                       1,
		Iterations:                       soakIterations,
	}
}

// Run runs every case of Cases against target as a subtest named after the
// case. dialOpts default to an insecure (h2c) connection.
func Run(t *testing.T, target string, dialOpts ...grpc.DialOption) {
	t.Helper()
	if len(dialOpts) == 0 {
		dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	cc, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		t.Fatalf("new client for %s: %v", target, err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			RunCase(t, c, cc, target, dialOpts)
		})
	}
}

// RunCase runs one case on cc, failing t if the case fails. target and
// dialOpts are used by channel_soak, which dials a new channel per RPC.
func RunCase(t *testing.T, c Case, cc *grpc.ClientConn, target string, dialOpts []grpc.DialOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), perCaseTimeoutDefault)
	defer cancel()
	if !current.CompareAndSwap(nil, t) {
		t.Fatalf("interoptest: cases cannot run in parallel (grpclog's Fatal is trapped per process)")
	}
	done := make(chan struct{})
	// The case runs on its own goroutine so that a trapped Fatal (which ends
	// the calling goroutine) never ends the test goroutine itself.
	go func() {
		defer close(done)
		c.Run(ctx, cc, target, dialOpts)
	}()
	<-done
	current.Store(nil)
}

// Server is a real interop server (grpc.testing.TestService) on loopback.
type Server struct {
	// Addr is the server's 127.0.0.1:port.
	Addr string
	// GRPC is the underlying server; Stop it to simulate a dying backend.
	GRPC *grpc.Server
	// Health is the server's grpc.health.v1 service; service "" is SERVING.
	Health *health.Server
}

// StartServer starts an interop server with a health service on
// 127.0.0.1:0 and stops it when the test ends.
func StartServer(tb testing.TB, opts ...grpc.ServerOption) *Server {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	hs := health.NewServer()
	healthgrpc.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return &Server{Addr: ln.Addr().String(), GRPC: srv, Health: hs}
}

// current is the test whose case is running; a trapped Fatal fails it.
var current atomic.Pointer[testing.T]

func init() {
	grpclog.SetLoggerV2(fatalTrap{})
}

// fatalTrap is a grpclog.LoggerV2 that prints errors to stderr, drops
// info and warnings (as grpc-go's default logger does), and turns Fatal into
// a failure of the current test case.
type fatalTrap struct{}

var stderrMu sync.Mutex

func printErr(args ...any) {
	stderrMu.Lock()
	defer stderrMu.Unlock()
	fmt.Fprintln(os.Stderr, append([]any{"grpc ERROR:"}, args...)...)
}

func (fatalTrap) Info(...any)                    {}
func (fatalTrap) Infoln(...any)                  {}
func (fatalTrap) Infof(string, ...any)           {}
func (fatalTrap) Warning(...any)                 {}
func (fatalTrap) Warningln(...any)               {}
func (fatalTrap) Warningf(string, ...any)        {}
func (fatalTrap) Error(args ...any)              { printErr(args...) }
func (fatalTrap) Errorln(args ...any)            { printErr(args...) }
func (fatalTrap) Errorf(f string, args ...any)   { printErr(fmt.Sprintf(f, args...)) }
func (fatalTrap) V(l int) bool                   { return l <= 0 }
func (fatalTrap) InfoDepth(int, ...any)          {}
func (fatalTrap) WarningDepth(int, ...any)       {}
func (fatalTrap) ErrorDepth(_ int, args ...any)  { printErr(args...) }
func (f fatalTrap) Fatal(args ...any)            { f.FatalDepth(1, args...) }
func (f fatalTrap) Fatalln(args ...any)          { f.FatalDepth(1, args...) }
func (f fatalTrap) Fatalf(s string, args ...any) { f.FatalDepth(1, fmt.Sprintf(s, args...)) }

// FatalDepth fails the current case and ends the calling goroutine, so
// grpclog never reaches its os.Exit. Outside a case it keeps grpclog's
// behaviour (print, then grpclog exits).
func (fatalTrap) FatalDepth(_ int, args ...any) {
	t := current.Load()
	if t == nil {
		printErr(args...)
		return
	}
	t.Error(fmt.Sprint(args...))
	runtime.Goexit()
}
