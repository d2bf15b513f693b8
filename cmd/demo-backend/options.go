package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// healthMode says which grpc.health.v1 service the backend registers.
type healthMode string

const (
	// healthFull is grpc-go's standard health server: Check, Watch and List.
	healthFull healthMode = "full"
	// healthCheckOnly answers Check; Watch and List are UNIMPLEMENTED, like
	// older or hand-written health servers.
	healthCheckOnly healthMode = "check-only"
	// healthNone registers no health service: every health RPC is
	// UNIMPLEMENTED.
	healthNone healthMode = "none"
)

// options are the backend's command-line settings, validated.
type options struct {
	addr        string
	id          string // "" means the bound address
	printAddr   bool
	health      healthMode
	services    []string
	healthDelay time.Duration
	flipAfter   time.Duration
	flipFor     time.Duration
	flipEvery   time.Duration
	control     string // "" disables the HTTP control endpoint
	drainDelay  time.Duration
	grace       time.Duration
	verbose     bool
	// tlsCert and tlsKey, both or neither, make it serve gRPC over TLS.
	tlsCert, tlsKey string
	// Load reports (orca.go).
	orca            bool
	utilization     float64
	qps             float64
	orcaMinInterval time.Duration
}

// scheduled reports whether the flip schedule is enabled.
func (o options) scheduled() bool {
	return o.flipAfter > 0 || o.flipFor > 0 || o.flipEvery > 0
}

// parseOptions parses args (without the program name). Usage and errors go to
// stderr; -h returns flag.ErrHelp.
func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	var health, services string
	fs := flag.NewFlagSet("demo-backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: demo-backend [flags]

A gRPC backend for trying out vigil: grpc.testing.TestService plus a
grpc.health.v1 health service whose status can be flipped on a schedule, with
SIGUSR1 (toggles "" SERVING <-> NOT_SERVING) or over HTTP (-control):

  curl -X POST 'http://ADDR/health?service=&status=NOT_SERVING'
  curl http://ADDR/health

With -orca it also serves ORCA load reports, whose utilization and qps are
set by flags or over HTTP:

  curl -X POST 'http://ADDR/load?utilization=0.8&qps=100'

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:50051", "gRPC listen address; port 0 picks a free port and prints it")
	fs.StringVar(&o.id, "id", "", "server_id returned by UnaryCall with fill_server_id (default: the bound address)")
	fs.BoolVar(&o.printAddr, "print-addr", false, "print 'listening ADDR' (and 'control ADDR') on stdout first; implied by port 0")
	fs.StringVar(&health, "health", string(healthFull), "health service: full (Check+Watch+List), check-only (Watch UNIMPLEMENTED), none (not registered)")
	fs.StringVar(&services, "services", "", "comma-separated extra health service names, registered SERVING")
	fs.DurationVar(&o.healthDelay, "health-delay", 0, "health handlers sleep this long before answering (simulates a stalled health check)")
	fs.DurationVar(&o.flipAfter, "flip-after", 0, `turn the whole-server status "" NOT_SERVING this long after start`)
	fs.DurationVar(&o.flipFor, "flip-for", 0, "stay NOT_SERVING this long, then SERVING again (0: for good)")
	fs.DurationVar(&o.flipEvery, "flip-every", 0, "repeat the flip with this period (0: flip once)")
	fs.StringVar(&o.control, "control", "", "HTTP control endpoint address, e.g. 127.0.0.1:0 (default off)")
	fs.DurationVar(&o.drainDelay, "drain-delay", 0, "on SIGTERM, report NOT_SERVING this long before stopping, so a proxy can drain")
	fs.DurationVar(&o.grace, "grace", 5*time.Second, "on SIGTERM, bound on waiting for in-flight RPCs")
	fs.BoolVar(&o.verbose, "v", false, "log the number of RPCs served every second")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve gRPC over TLS with this PEM certificate chain (with -tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "the PEM private key of -tls-cert")
	fs.BoolVar(&o.orca, "orca", false, "serve ORCA load reports (xds.service.orca.v3.OpenRcaService), with -utilization and -qps")
	fs.Float64Var(&o.utilization, "utilization", 0.5, "the application and cpu utilization reported (-orca); POST /load?utilization= changes it")
	fs.Float64Var(&o.qps, "qps", 100, "the queries per second reported (-orca); POST /load?qps= changes it")
	fs.DurationVar(&o.orcaMinInterval, "orca-min-interval", time.Second, "the shortest report interval granted (-orca); 30s or more: grpc-go's orca.Register, which grants no less")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, fmt.Errorf("%w: %w", errUsage, err) // flag has printed it
	}
	if fs.NArg() > 0 {
		return options{}, usageError(fs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
	}
	o.health = healthMode(health)
	o.services = splitList(services)
	if err := o.validate(); err != nil {
		return options{}, usageError(fs, err)
	}
	if _, port, _ := net.SplitHostPort(o.addr); port == "0" {
		o.printAddr = true
	}
	return o, nil
}

func (o options) validate() error {
	var errs []error
	switch o.health {
	case healthFull, healthCheckOnly, healthNone:
	default:
		errs = append(errs, fmt.Errorf("-health %q: want full, check-only or none", o.health))
	}
	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		errs = append(errs, fmt.Errorf("-addr %q: %w", o.addr, err))
	}
	if o.control != "" {
		if _, _, err := net.SplitHostPort(o.control); err != nil {
			errs = append(errs, fmt.Errorf("-control %q: %w", o.control, err))
		}
	}
	for name, d := range map[string]time.Duration{
		"-health-delay": o.healthDelay, "-flip-after": o.flipAfter, "-flip-for": o.flipFor,
		"-flip-every": o.flipEvery, "-drain-delay": o.drainDelay, "-grace": o.grace,
	} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %v: must not be negative", name, d))
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together"))
	}
	if o.utilization < 0 || o.qps < 0 {
		errs = append(errs, fmt.Errorf("-utilization %v, -qps %v: must not be negative", o.utilization, o.qps))
	}
	if o.orcaMinInterval <= 0 {
		errs = append(errs, fmt.Errorf("-orca-min-interval %v: must be positive", o.orcaMinInterval))
	}
	if o.flipEvery > 0 && o.flipFor <= 0 {
		errs = append(errs, errors.New("-flip-every needs -flip-for: a flip that lasts for good cannot repeat"))
	}
	if o.flipEvery > 0 && o.flipEvery <= o.flipFor {
		errs = append(errs, fmt.Errorf("-flip-every %v must be longer than -flip-for %v", o.flipEvery, o.flipFor))
	}
	if o.health == healthNone && (o.scheduled() || len(o.services) > 0 || o.healthDelay > 0) {
		errs = append(errs, errors.New("-flip-*, -services and -health-delay need a health service, but -health is none"))
	}
	return errors.Join(errs...)
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// errUsage marks errors caused by bad flags (exit status 2).
var errUsage = errors.New("usage")

func usageError(fs *flag.FlagSet, err error) error {
	fmt.Fprintf(fs.Output(), "demo-backend: %v\nRun 'demo-backend -h' for usage.\n", err)
	return fmt.Errorf("%w: %w", errUsage, err)
}
