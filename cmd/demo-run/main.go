// Command demo-run is what `make run` runs: a newcomer's first look at vigil.
// It starts three demo backends (demo-1..3; demo-2 turns NOT_SERVING a few
// seconds in, for a few seconds, and again periodically), vigil with the
// example configuration, and two demo clients, one on vigil's grpc listener
// (calling two services in turn, which the listener routes to two
// clusters: grpc.testing.TestService to demo, orders.v1.Orders to orders)
// and one on its tcp listener. Their output is merged, each line prefixed
// with the time since the start and who said it:
//
//	 9.2s vigil       | time=... level=WARN msg="endpoint evicted" cluster=demo endpoint=127.0.0.1:50052 check=check reason=NOT_SERVING ...
//	10.1s client-grpc | client-grpc: 40 ok, 0 failed | orders/demo-1=20 orders/demo-2=0 test/demo-1=7 test/demo-2=0 test/demo-3=13
//
// Ctrl-C (SIGINT) or SIGTERM stops them in order: the clients first (they
// print their totals), then vigil, then the backends. If any of them exits on
// its own, demo-run stops the others and exits 1.
//
// The processes run in their own process groups, so that the terminal's
// Ctrl-C reaches demo-run only and the stops happen in that order; should
// demo-run die without stopping them, the kernel sends them SIGTERM
// (PR_SET_PDEATHSIG).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintf(os.Stderr, "demo-run: %v\n", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// options are demo-run's settings; the defaults match config.example.yaml.
type options struct {
	bin          string
	config       string
	admin        string
	grpcListener string
	tcpListener  string
	backends     []string
	controlBase  int // the control endpoint of backend i listens on port controlBase+i; 0: none
	flipAfter    time.Duration
	flipFor      time.Duration
	flipEvery    time.Duration
	rate         float64
	report       time.Duration
	readyTimeout time.Duration
	// tls: generate certificates and serve a TLS copy of config.
	tls     bool
	tlsDemo *tlsDemo
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	var backends string
	fs := flag.NewFlagSet("demo-run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: demo-run [flags]

Runs the vigil demo (make run): demo backends, vigil and demo clients, with
their output merged. Ctrl-C stops everything. Run 'make build' first.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.bin, "bin", "bin", "directory holding vigil, demo-backend and demo-client")
	fs.StringVar(&o.config, "config", "config.example.yaml", "vigil configuration; its cluster should list the -backends")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9901", "vigil's admin address from the config, to wait for /ready (\"\": none)")
	fs.StringVar(&o.grpcListener, "grpc", "127.0.0.1:8080", "vigil's grpc listener from the config (\"\": no client)")
	fs.StringVar(&o.tcpListener, "tcp", "127.0.0.1:8081", "vigil's tcp listener from the config (\"\": no client)")
	fs.StringVar(&backends, "backends", "127.0.0.1:50051,127.0.0.1:50052,127.0.0.1:50053", "backend addresses; ids demo-1, demo-2, ...")
	fs.IntVar(&o.controlBase, "control-base", 50061, "backend i's HTTP control endpoint listens on 127.0.0.1:(this+i-1); 0: none")
	fs.DurationVar(&o.flipAfter, "flip-after", 8*time.Second, "demo-2 turns NOT_SERVING this long after its start")
	fs.DurationVar(&o.flipFor, "flip-for", 8*time.Second, "for this long")
	fs.DurationVar(&o.flipEvery, "flip-every", 40*time.Second, "and again with this period (0: once)")
	fs.Float64Var(&o.rate, "rate", 20, "calls per second of each client")
	fs.DurationVar(&o.report, "report", 2*time.Second, "report period of the clients")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 20*time.Second, "how long each process may take to become ready")
	fs.BoolVar(&o.tls, "tls", false, "generate certificates into a temporary directory and serve -config with TLS on the grpc listener and mTLS on the tcp one")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	for part := range strings.SplitSeq(backends, ",") {
		if part = strings.TrimSpace(part); part != "" {
			o.backends = append(o.backends, part)
		}
	}
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	if len(o.backends) == 0 {
		errs = append(errs, errors.New("-backends is empty"))
	}
	for _, addr := range o.backends {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("-backends %q: %w", addr, err))
		}
	}
	if o.controlBase < 0 || o.controlBase+len(o.backends) > 65536 {
		errs = append(errs, fmt.Errorf("-control-base %d: want a port, or 0", o.controlBase))
	}
	if o.grpcListener == "" && o.tcpListener == "" {
		errs = append(errs, errors.New("-grpc and -tcp are both empty: no client to run"))
	}
	if o.readyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-ready-timeout %v: must be positive", o.readyTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "demo-run: %v\nRun 'demo-run -h' for usage.\n", err)
		return options{}, fmt.Errorf("%w: %w", errUsage, err)
	}
	return o, nil
}

// Colors of the name prefixes on a terminal.
var backendColors = []string{"\x1b[36m", "\x1b[35m", "\x1b[34m"}

const (
	vigilColor  = "\x1b[1;33m"
	clientColor = "\x1b[32m"
)

// demoPlan is what demo-run starts, in order.
type demoPlan struct {
	backends []proc
	vigil    proc
	clients  []proc
}

func backendID(i int) string { return "demo-" + strconv.Itoa(i+1) }

// portWait bounds how long demo-run waits for a port held in TIME_WAIT
// (60 s on Linux).
const portWait = 70 * time.Second

// fixedPorts are the addresses the backends will listen on.
func (o options) fixedPorts() []string {
	var addrs []string
	for i, addr := range o.backends {
		addrs = append(addrs, addr)
		if o.controlBase > 0 {
			addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(o.controlBase+i))
		}
	}
	return addrs
}

// plan turns the options into the processes to start. Arguments passed to
// the demo binaries use their flags; the clients' -rate etc. are validated
// by the clients themselves.
func plan(o options) demoPlan {
	var p demoPlan
	for i, addr := range o.backends {
		args := []string{"-id", backendID(i), "-addr", addr}
		if o.controlBase > 0 {
			args = append(args, "-control", "127.0.0.1:"+strconv.Itoa(o.controlBase+i))
		}
		if i == 1 && o.flipAfter > 0 {
			args = append(args, "-flip-after", o.flipAfter.String(), "-flip-for", o.flipFor.String())
			if o.flipEvery > 0 {
				args = append(args, "-flip-every", o.flipEvery.String())
			}
		}
		p.backends = append(p.backends, proc{
			name: backendID(i), path: filepath.Join(o.bin, "demo-backend"), args: args,
			color: backendColors[i%len(backendColors)], ready: waitDial(addr), stopWait: 10 * time.Second,
		})
	}

	vigilReady := waitVigil(o.grpcListener, o.admin)
	if o.grpcListener == "" {
		vigilReady = waitVigil(o.tcpListener, o.admin)
	}
	config := o.config
	if o.tlsDemo != nil {
		config = o.tlsDemo.config
	}
	p.vigil = proc{
		name: "vigil", path: filepath.Join(o.bin, "vigil"), args: []string{"run", "--config", config},
		color: vigilColor, ready: vigilReady, stopWait: 20 * time.Second, // > shutdown.timeout
	}

	for _, c := range []struct{ mode, target string }{{"grpc", o.grpcListener}, {"tcp", o.tcpListener}} {
		if c.target == "" {
			continue
		}
		name := "client-" + c.mode
		args := []string{
			"-name", name, "-target", c.target, "-mode", c.mode,
			"-rate", strconv.FormatFloat(o.rate, 'g', -1, 64), "-report", o.report.String(),
		}
		if c.mode == "grpc" {
			// Both services the listener routes: TestService to cluster
			// demo, orders.v1.Orders to cluster orders.
			args = append(args, "-call", "both")
		}
		if o.tlsDemo != nil {
			args = append(args, o.tlsDemo.clientArgs(c.mode)...)
		}
		p.clients = append(p.clients, proc{
			name: name, path: filepath.Join(o.bin, "demo-client"),
			args:  args,
			color: clientColor, stopWait: 10 * time.Second,
		})
	}
	return p
}

func (p demoPlan) all() []proc {
	all := append([]proc{}, p.backends...)
	all = append(all, p.vigil)
	return append(all, p.clients...)
}

// run runs the demo until ctx is done; it returns an error if a process
// could not start or exited on its own.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	if opts.tls {
		dir, err := os.MkdirTemp("", "vigil-tls-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if opts.tlsDemo, err = newTLSDemo(dir, opts.config); err != nil {
			return fmt.Errorf("TLS demo: %w", err)
		}
	}
	p := plan(opts)
	for _, pr := range p.all() {
		if _, err := os.Stat(pr.path); err != nil {
			return fmt.Errorf("%s: %w (run 'make build' first)", pr.path, err)
		}
	}
	out := &output{w: stdout, start: time.Now(), color: isTerminal(stdout) && os.Getenv("NO_COLOR") == "", width: nameWidth(p.all())}
	introduce(out, opts, p)
	if err := waitPortsFree(ctx, out, opts.fixedPorts(), portWait); err != nil {
		return err
	}
	return supervise(ctx, out, [][]proc{p.backends, {p.vigil}, p.clients}, opts.readyTimeout)
}

// supervise starts the stages one after the other, each process once the
// previous stages are ready, and then waits for ctx or for a process to exit.
// Everything started is stopped before it returns.
func supervise(ctx context.Context, out *output, stages [][]proc, readyTimeout time.Duration) error {
	total := 0
	for _, stage := range stages {
		total += len(stage)
	}
	s := newSupervisor(out, total)
	defer s.stopAll()

	for _, stage := range stages {
		var started []*running
		for _, pr := range stage {
			out.say("starting %s: %s %s", pr.name, pr.path, strings.Join(pr.args, " "))
			r, err := s.start(pr)
			if err != nil {
				return err
			}
			started = append(started, r)
		}
		for _, r := range started {
			if err := s.waitReady(ctx, r, readyTimeout); err != nil {
				if ctx.Err() != nil {
					out.say("stopping everything")
					return nil
				}
				out.say("%v: stopping everything", err)
				return err
			}
		}
	}
	out.say("all started; Ctrl-C stops everything")

	select {
	case <-ctx.Done():
		out.say("stopping everything: clients, then vigil, then the backends")
		s.stopAll()
		out.say("all stopped")
		return nil
	case r := <-s.exited:
		err := fmt.Errorf("%s exited on its own: %s", r.name, exitDescription(r.err))
		out.say("%v: stopping everything", err)
		return err
	}
}

// introduce tells the newcomer what to watch for.
func introduce(out *output, o options, p demoPlan) {
	out.say("the vigil demo: %d backends, vigil (%s), %d clients", len(p.backends), o.config, len(p.clients))
	if len(o.backends) > 1 && o.flipAfter > 0 {
		out.say("%s reports NOT_SERVING %v after its start, for %v: watch vigil log", backendID(1), o.flipAfter, o.flipFor)
		out.say(`  "endpoint evicted" ... reason=NOT_SERVING, the clients' %s=0, then "endpoint readmitted"`, backendID(1))
	}
	if o.grpcListener != "" {
		out.say("client-grpc calls two services through one listener: test/ID is grpc.testing.TestService (cluster demo), orders/ID orders.v1.Orders (routed to cluster orders: demo-1 and demo-2)")
	}
	if o.controlBase > 0 {
		out.say("flip a backend yourself: curl -X POST '127.0.0.1:%d/health?status=NOT_SERVING' (demo-1; status=SERVING undoes it)", o.controlBase)
	}
	if o.admin != "" {
		out.say("status page: http://%s/   (open it in a browser; it follows vigil live)", o.admin)
		out.say("look inside: curl -s %s/clusters   or   %s status --admin %s", o.admin, filepath.Join(o.bin, "vigil"), o.admin)
	}
	if d := o.tlsDemo; d != nil {
		out.say("TLS: certificates generated in %s (removed at exit); vigil serves %s", d.dir, d.config)
		if o.grpcListener != "" {
			out.say("  grpc listener, TLS: grpc-health-probe -addr %s -tls -tls-ca-cert %s -tls-server-name localhost", o.grpcListener, d.ca)
		}
		if o.tcpListener != "" {
			out.say("  tcp listener, mTLS: openssl s_client -connect %s -CAfile %s -cert %s -key %s", o.tcpListener, d.ca, d.clientCert, d.client)
		}
		out.say("  rotate: write a new pair over %s and %s; vigil logs \"tls certificate reloaded\"", d.cert, d.key)
		if o.admin != "" {
			out.say("  handshakes and expiry: curl -s %s/metrics | grep vigil_tls_", o.admin)
		}
	}
}

func nameWidth(procs []proc) int {
	width := len("demo-run")
	for _, p := range procs {
		width = max(width, len(p.name))
	}
	return width
}
