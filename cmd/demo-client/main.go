// Command demo-client sends grpc.testing.TestService UnaryCalls (with
// fill_server_id), or orders.v1.Orders/Get calls, or both in turn (-call),
// through vigil and prints, every -report, how they spread over the
// backends and why any failed:
//
//	client: 40 ok, 0 failed | demo-1=14 demo-2=13 demo-3=13
//	client: 30 ok, 10 failed | demo-1=15 demo-2=0 demo-3=15 | 10 UNAVAILABLE: no healthy upstream in cluster demo
//
// -mode grpc sends every call over one connection (a grpc listener balances
// per RPC); -mode tcp opens a new connection per call and closes it after (a
// tcp listener balances per connection). SIGINT or SIGTERM (or the end of
// -duration) stops it after a final report and a total, with exit status 0.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

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
		fmt.Fprintf(stderr, "demo-client: %v\n", err)
		return 1
	}
}

const (
	modeGRPC = "grpc"
	modeTCP  = "tcp"
)

// options are the client's command-line settings, validated.
type options struct {
	target      string
	mode        string
	call        string
	rate        float64
	report      time.Duration
	size        int
	timeout     time.Duration
	duration    time.Duration
	concurrency int
	name        string
	// TLS: with tlsCA, calls go over TLS verified against that CA.
	tlsCA, tlsServerName, tlsCert, tlsKey string
	creds                                 credentials.TransportCredentials
}

// maxSize matches the backend's bound on response sizes; maxSizeSlack is
// what a message may hold beyond its payload.
const (
	maxSize      = 16 << 20
	maxSizeSlack = 64 << 10
)

var errUsage = errors.New("usage")

// tlsCredentials are the TLS settings of the -tls flags.
func tlsCredentials(o options) (credentials.TransportCredentials, error) {
	pem, err := os.ReadFile(o.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("-tls-ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-tls-ca %s: no PEM certificate", o.tlsCA)
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: o.tlsServerName}
	if o.tlsCert != "" || o.tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert/-tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(cfg), nil
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("demo-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: demo-client [flags]

Sends TestService.UnaryCall with fill_server_id to -target and reports, every
-report, the calls that succeeded by server_id and those that failed by
status code and message.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.target, "target", "127.0.0.1:8080", "address (or gRPC target) to send calls to, e.g. a vigil listener")
	fs.StringVar(&o.mode, "mode", modeGRPC, "grpc: one connection, balanced per RPC; tcp: a new connection per call")
	fs.StringVar(&o.call, "call", callTest, "grpc mode: test (grpc.testing.TestService/UnaryCall), orders (orders.v1.Orders/Get), or both in turn (tallied as test/ID and orders/ID)")
	fs.Float64Var(&o.rate, "rate", 20, "calls per second")
	fs.DurationVar(&o.report, "report", 2*time.Second, "report period")
	fs.IntVar(&o.size, "size", 64, "request payload and response size, in bytes")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Second, "deadline of each call")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until SIGINT/SIGTERM)")
	fs.IntVar(&o.concurrency, "concurrency", 100, "most calls in flight; at the limit the rate drops")
	fs.StringVar(&o.name, "name", "client", "prefix of the report lines")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "call over TLS, verifying the server against this PEM CA file")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "with -tls-ca: the name to verify (default: the target's host)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "with -tls-ca and -tls-key: present this client certificate (mTLS)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the private key of -tls-cert")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, fmt.Errorf("%w: %w", errUsage, err) // flag has printed it
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	if o.target == "" {
		errs = append(errs, errors.New("-target is empty"))
	}
	if o.mode != modeGRPC && o.mode != modeTCP {
		errs = append(errs, fmt.Errorf("-mode %q: want grpc or tcp", o.mode))
	}
	switch {
	case o.call != callTest && o.call != callOrders && o.call != callBoth:
		errs = append(errs, fmt.Errorf("-call %q: want test, orders or both", o.call))
	case o.call != callTest && o.mode == modeTCP:
		errs = append(errs, errors.New("-call orders and both are for -mode grpc"))
	}
	if !(o.rate > 0 && o.rate <= 1e5) { // also rejects NaN
		errs = append(errs, fmt.Errorf("-rate %v: want more than 0 and at most 100000 calls per second", o.rate))
	}
	if o.report <= 0 {
		errs = append(errs, fmt.Errorf("-report %v: must be positive", o.report))
	}
	if o.size < 0 || o.size > maxSize {
		errs = append(errs, fmt.Errorf("-size %d: want 0 to %d bytes", o.size, maxSize))
	}
	if o.timeout <= 0 {
		errs = append(errs, fmt.Errorf("-timeout %v: must be positive", o.timeout))
	}
	if o.duration < 0 {
		errs = append(errs, fmt.Errorf("-duration %v: must not be negative", o.duration))
	}
	if o.concurrency < 1 {
		errs = append(errs, fmt.Errorf("-concurrency %d: must be at least 1", o.concurrency))
	}
	if o.tlsCA != "" {
		creds, err := tlsCredentials(o)
		if err != nil {
			errs = append(errs, err)
		}
		o.creds = creds
	} else if o.tlsCert != "" || o.tlsKey != "" || o.tlsServerName != "" {
		errs = append(errs, errors.New("-tls-server-name, -tls-cert and -tls-key need -tls-ca"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "demo-client: %v\nRun 'demo-client -h' for usage.\n", err)
		return options{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	return o, nil
}

// run sends traffic until ctx is done or -duration is over, printing the
// report lines on stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	c, err := newCaller(opts)
	if err != nil {
		return err
	}
	defer c.Close()

	how := "one connection (balanced per RPC)"
	if opts.mode == modeTCP {
		how = "a new connection per call (balanced per connection)"
	}
	fmt.Fprintf(stdout, "%s: %g calls/s to %s over %s, reporting every %v\n", opts.name, opts.rate, opts.target, how, opts.report)

	trafficCtx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	if opts.duration > 0 {
		trafficCtx, stopTraffic = context.WithTimeout(ctx, opts.duration)
		defer stopTraffic()
	}
	rec := newRecorder()
	trafficDone := make(chan struct{})
	go func() {
		defer close(trafficDone)
		sendTraffic(trafficCtx, c, opts, rec)
	}()

	ticker := time.NewTicker(opts.report)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			period, seen := rec.takePeriod()
			fmt.Fprintln(stdout, formatReport(opts.name, period, seen))
		case <-trafficDone:
			// Final report: the partial period, then everything.
			period, seen := rec.takePeriod()
			fmt.Fprintln(stdout, formatReport(opts.name, period, seen))
			fmt.Fprintln(stdout, formatReport(opts.name+" total", rec.takeTotal(), seen))
			return nil
		}
	}
}
