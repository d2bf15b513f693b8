// Command demo-backend is a small gRPC backend for trying out and testing
// vigil. It serves grpc.testing.TestService (UnaryCall with fill_server_id
// answers with -id), orders.v1.Orders (Get and Charge, answering with -id
// as server_id: a second service for routes, see internal/ordersvc) and a
// grpc.health.v1 health service whose status can be
// flipped on a schedule (-flip-after, -flip-for, -flip-every), with SIGUSR1
// (toggles the whole-server status "" between SERVING and NOT_SERVING) or
// over HTTP (-control ADDR: POST /health?service=NAME&status=STATUS,
// GET /health). Every change is logged to stderr.
//
// For scripts and tests: -addr 127.0.0.1:0 (or -print-addr) prints
// "listening ADDR" as the first line on stdout, then "control ADDR" when
// -control is set; -health=check-only|none removes Watch or the whole health
// service; -health-delay stalls the health handlers. SIGTERM or SIGINT turns
// every status NOT_SERVING, waits -drain-delay, stops gracefully within
// -grace and exits 0.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitCode maps run's error to an exit status, printing it if needed.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2 // already printed with the usage hint
	default:
		fmt.Fprintf(stderr, "demo-backend: %v\n", err)
		return 1
	}
}

// run runs the backend until ctx is done. args are the command-line flags;
// stdout gets only the address lines, logs go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	// SIGUSR1 toggles the health status; registered before the address is
	// printed, so a script may send it as soon as it has read that line.
	toggles := make(chan os.Signal, 1)
	signal.Notify(toggles, syscall.SIGUSR1)
	defer signal.Stop(toggles)

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", opts.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", opts.addr, err)
	}
	var control net.Listener
	if opts.control != "" {
		control, err = lc.Listen(ctx, "tcp", opts.control)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen for the control endpoint on %s: %w", opts.control, err)
		}
	}
	if opts.printAddr {
		fmt.Fprintf(stdout, "listening %s\n", lis.Addr())
		if control != nil {
			fmt.Fprintf(stdout, "control %s\n", control.Addr())
		}
	}
	id := opts.id
	if id == "" {
		id = lis.Addr().String()
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	var extra []grpc.ServerOption
	if opts.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(opts.tlsCert, opts.tlsKey)
		if err != nil {
			lis.Close()
			if control != nil {
				control.Close()
			}
			return fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		extra = append(extra, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	}
	return newBackend(opts, id, logger, extra...).serve(ctx, lis, control, toggles)
}
