package checker

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-proxy/vigil/checker/internal/probeconn"
)

// Change is one change of an endpoint's Status, as reported to
// GroupOptions.OnChange.
type Change struct {
	Cluster, Address string
	Old, New         Status
	// Transition is the change of Health worth an eviction-log record, or
	// NoTransition when only the reason, cause or counters changed.
	Transition Transition
	// Result is the probe result (or pushed status) that caused the change.
	Result Result
	// Mode is the mode in use: ModeCheck for a Watch endpoint that fell
	// back to Check polling.
	Mode Mode
	// Hint explains, in one line, why an unhealthy endpoint is out when the
	// cause is usually a mistake on the backend (see Hint); "" otherwise.
	Hint string
	// Healthy and Total count the group's endpoints after the change.
	Healthy, Total int
}

// ProbeStats describes the latest probe of an endpoint.
type ProbeStats struct {
	// At is when the probe ended or the status was pushed; zero before the
	// first probe.
	At time.Time
	// Latency is how long the probe took (zero for pushed statuses).
	Latency time.Duration
	// Result is the probe's result, after the on_unimplemented policy.
	Result Result
	// Mode is the mode in use: ModeCheck for a Watch endpoint that fell
	// back to Check polling.
	Mode Mode
}

// GroupOptions configure a Group beyond its health-check Config.
type GroupOptions struct {
	// Cluster names the group in log records and Changes.
	Cluster string
	// Logger receives the group's warnings (an invalid Config, a backend
	// served without a health service, a Watch fallback); nil means
	// slog.Default(). Transitions are not logged here: they are Changes,
	// and the eviction log is written from them (balancer/pool).
	Logger *slog.Logger
	// OnChange is called after every change of an endpoint's Status
	// (health, reason, cause or counters), one call at a time per group, in
	// the order the changes were applied. It may call Status, Counts and
	// Stats, but must not call Add, Remove, Reconfigure or Close, which wait
	// for probers that may be waiting for OnChange to return.
	OnChange func(Change)
	// OnProbe is called after every probe or pushed status, from the
	// endpoint's prober, concurrently for different endpoints. It must be
	// cheap (count metrics, nothing more).
	OnProbe func(address string, r Result)
	// OnLoadReport is called with every ORCA load report an endpoint's
	// backend sends, from that endpoint's load-report goroutine, while
	// load reports are on (SetLoadReports). It must be cheap.
	OnLoadReport func(address string, r LoadReport)
}

// Group health-checks the endpoints of one cluster: one prober goroutine per
// endpoint applies each probe result to the endpoint's Status (Status.Next),
// keeps the cluster's counts and reports every change. All methods are safe
// for concurrent use.
type Group struct {
	cluster  string
	logger   *slog.Logger
	onChange func(Change)
	onProbe  func(string, Result)

	onLoadReport func(string, LoadReport)
	// thresholds are the state machine's, read by every result; a change
	// of them alone needs no prober restarted.
	thresholds atomic.Pointer[Thresholds]

	drains drainWatch

	// ctlMu serializes Add, Remove, Reconfigure and Close, which start and
	// stop probers.
	ctlMu     sync.Mutex
	closed    bool
	nextStart time.Time // when the next first probe may go out
	// loadPeriod is the load-report interval; 0: no load reports.
	loadPeriod time.Duration

	// emitMu serializes applying a change with calling OnChange, so that
	// Changes come out in the order they were made, each with the counts
	// right after it. Lock order: ctlMu, emitMu, mu.
	emitMu sync.Mutex

	mu        sync.RWMutex
	cfg       Config
	endpoints map[string]*endpoint
	healthy   int
}

// endpoint is one probed address of a group.
type endpoint struct {
	address string

	// status is written, under Group.mu, only by the endpoint's single
	// writer: its running prober, or a control method while no prober runs.
	// That writer reads it without a lock; everyone else reads it under
	// Group.mu.
	status  Status
	removed bool // under Group.mu

	stats atomic.Pointer[ProbeStats]

	// conn is the probe connection, nil until needed. It belongs to the
	// running prober; between probers, to the control method that stopped
	// them. It survives Reconfigure.
	conn *probeconn.Conn
	// shared is conn, published for the load-report stream (loadreport.go),
	// which only streams on it.
	shared atomic.Pointer[probeconn.Conn]

	// Once-per-endpoint warnings (on_unimplemented: serve, Watch
	// fallback), set when logged; owned like conn.
	warnedUnimplemented bool
	warnedNoWatch       bool
	// warnedNoLoadReports is owned by the load-report goroutine.
	warnedNoLoadReports bool

	cancel context.CancelFunc // stops the running prober; nil if none
	done   chan struct{}      // closed when the running prober has returned

	loadCancel context.CancelFunc // stops the load-report stream; nil if none
	loadDone   chan struct{}
}

// NewGroup returns a group that probes the endpoints added to it according
// to cfg. Zero fields of cfg take the defaults; an invalid cfg (see
// Config.Validate) is logged and its invalid fields replaced by defaults.
// Nothing runs until Add.
func NewGroup(cfg Config, opts GroupOptions) *Group {
	g := &Group{
		cluster:  opts.Cluster,
		logger:   opts.Logger,
		onChange: opts.OnChange,
		onProbe:  opts.OnProbe,

		onLoadReport: opts.OnLoadReport,
		endpoints:    make(map[string]*endpoint),
	}
	if g.logger == nil {
		g.logger = slog.Default()
	}
	g.cfg = g.checkConfig(cfg)
	g.thresholds.Store(&g.cfg.Thresholds)
	return g
}

// checkConfig logs what is wrong with cfg and returns it with defaults.
func (g *Group) checkConfig(cfg Config) Config {
	if err := cfg.Validate(); err != nil {
		g.logger.LogAttrs(context.Background(), slog.LevelError, "invalid health-check config, using defaults",
			slog.String("cluster", g.cluster), slog.String("error", err.Error()))
	}
	return cfg.usable()
}

// Add starts probing address. initial is Status{Health: Pending} for a new
// endpoint, or the status kept across a reload or a prober restart (a
// Draining status counts as a new endpoint: a draining endpoint added back
// is probed afresh). The first probe goes out at once; a batch of adds is
// paced so that at most 10,000 first probes go out per min(interval, 1 s).
// Adding an address the group already has, or adding to a closed group,
// does nothing.
func (g *Group) Add(address string, initial Status) {
	g.ctlMu.Lock()
	defer g.ctlMu.Unlock()
	if g.closed {
		return
	}
	ep, cfg, ok := g.insert(address, initial)
	if ok {
		g.start(ep, cfg)
		g.startLoad(ep, cfg)
	}
}

// insert adds an endpoint without starting its prober.
func (g *Group) insert(address string, initial Status) (*endpoint, Config, bool) {
	if initial.Health > Unhealthy {
		initial = Status{Health: Pending}
	}
	if initial.Since.IsZero() {
		initial.Since = time.Now()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, dup := g.endpoints[address]; dup {
		return nil, Config{}, false
	}
	ep := &endpoint{address: address, status: initial}
	g.endpoints[address] = ep
	if initial.Health == Healthy {
		g.healthy++
	}
	return ep, g.cfg, true
}

// firstProbeBatch is how many first probes may go out per
// min(interval, 1 s): a batch of new endpoints is spread over that window
// instead of dialing all at once.
const firstProbeBatch = 10_000

// firstProbeDelay paces first probes; g.ctlMu must be held.
func (g *Group) firstProbeDelay(cfg Config) time.Duration {
	spacing := min(cfg.Interval, time.Second) / firstProbeBatch
	now := time.Now()
	if g.nextStart.Before(now) {
		g.nextStart = now
	}
	d := g.nextStart.Sub(now)
	g.nextStart = g.nextStart.Add(spacing)
	return d
}

// start starts ep's prober for cfg, or, in mode none, admits ep at once;
// g.ctlMu must be held and no prober of ep may be running.
func (g *Group) start(ep *endpoint, cfg Config) {
	if cfg.Mode == ModeNone {
		g.apply(ep, ModeNone, cfg, Result{OK: true, Pushed: true}, time.Now())
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	ep.cancel, ep.done = cancel, make(chan struct{})
	p := newProber(g, ep, cfg)
	go p.run(ctx, g.firstProbeDelay(cfg))
}

// stop stops ep's prober, if any, and waits for it to return.
func (ep *endpoint) stop() {
	if ep.cancel == nil {
		return
	}
	ep.cancel()
	<-ep.done
	ep.cancel, ep.done = nil, nil
}

// stopAll stops the probers of eps: all are told first, then waited for,
// so that stopping many takes as long as stopping the slowest.
func stopAll(eps []*endpoint) {
	for _, ep := range eps {
		if ep.cancel != nil {
			ep.cancel()
		}
	}
	for _, ep := range eps {
		ep.stop()
	}
}

// closeConns closes the probe connections of eps, a few at a time.
func closeConns(eps []*endpoint) {
	const parallel = 16
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, ep := range eps {
		if ep.conn == nil {
			continue
		}
		conn := ep.conn
		ep.conn = nil
		ep.shared.Store(nil)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = conn.Close()
		})
	}
	wg.Wait()
}

// Remove stops probing address at once, waits for its prober to return,
// closes its probe connection and returns its last Status.
func (g *Group) Remove(address string) (Status, bool) {
	g.ctlMu.Lock()
	defer g.ctlMu.Unlock()
	g.mu.Lock()
	ep, ok := g.endpoints[address]
	if !ok {
		g.mu.Unlock()
		return Status{}, false
	}
	delete(g.endpoints, address)
	ep.removed = true
	if ep.status.Health == Healthy {
		g.healthy--
	}
	g.mu.Unlock()

	ep.stop()
	stopLoads([]*endpoint{ep})
	closeConns([]*endpoint{ep})
	return ep.status, true
}

// Reconfigure applies cfg. A change of the thresholds alone takes effect
// at each endpoint's next result, with no prober restarted and no probe
// connection or Watch stream touched. Any other change restarts every
// prober with cfg, keeping each endpoint's Status and, unless the new mode
// needs none or the TLS changed, its probe connection; each restarted prober probes at once
// (paced as in Add). Switching to mode none admits or readmits every
// endpoint at once.
func (g *Group) Reconfigure(cfg Config) {
	g.ctlMu.Lock()
	defer g.ctlMu.Unlock()
	if g.closed {
		return
	}
	cfg = g.checkConfig(cfg)
	g.mu.Lock()
	restart := probersDiffer(g.cfg, cfg)
	// A connection made with the other transport cannot be kept.
	transport := g.cfg.TLS != cfg.TLS
	g.cfg = cfg
	g.thresholds.Store(&cfg.Thresholds)
	eps := g.listLocked()
	g.mu.Unlock()
	if !restart {
		return
	}

	stopAll(eps)
	stopLoads(eps)
	if cfg.Mode == ModeTCP || cfg.Mode == ModeNone || transport {
		closeConns(eps)
	}
	for _, ep := range eps {
		g.start(ep, cfg)
		g.startLoad(ep, cfg)
	}
}

// Close stops every prober, waits for them and closes the probe
// connections. The group keeps answering Status, Counts and Stats with the
// last known values; Add and Reconfigure do nothing afterwards.
func (g *Group) Close() {
	g.ctlMu.Lock()
	if g.closed {
		g.ctlMu.Unlock()
		return
	}
	g.closed = true
	g.mu.RLock()
	eps := g.listLocked()
	g.mu.RUnlock()
	stopAll(eps)
	stopLoads(eps)
	g.drains.close()
	closeConns(eps)
	g.ctlMu.Unlock()
}

func (g *Group) listLocked() []*endpoint {
	eps := make([]*endpoint, 0, len(g.endpoints))
	for _, ep := range g.endpoints {
		eps = append(eps, ep)
	}
	return eps
}

// Status returns the current Status of address.
func (g *Group) Status(address string) (Status, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	ep, ok := g.endpoints[address]
	if !ok {
		return Status{}, false
	}
	return ep.status, true
}

// Counts returns how many of the group's endpoints are healthy, and how
// many there are.
func (g *Group) Counts() (healthy, total int) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.healthy, len(g.endpoints)
}

// Stats returns the latest probe of address (zero before its first probe),
// and whether the group has address.
func (g *Group) Stats(address string) (ProbeStats, bool) {
	g.mu.RLock()
	ep, ok := g.endpoints[address]
	g.mu.RUnlock()
	if !ok {
		return ProbeStats{}, false
	}
	if s := ep.stats.Load(); s != nil {
		return *s, true
	}
	return ProbeStats{}, true
}

// observe records one probe result or pushed status of ep: stats and
// OnProbe. It takes no lock.
func (g *Group) observe(ep *endpoint, mode Mode, r Result, now time.Time) {
	ep.stats.Store(&ProbeStats{At: now, Latency: r.Latency, Result: r, Mode: mode})
	if g.onProbe != nil {
		g.onProbe(ep.address, r)
	}
}

// report is the prober's step for one result: observe it, then apply it.
func (g *Group) report(ep *endpoint, mode Mode, cfg Config, r Result) {
	now := time.Now()
	g.observe(ep, mode, r, now)
	g.apply(ep, mode, cfg, r, now)
}

// apply runs ep's state machine on r and, if its Status changes, commits
// the change: the endpoint and the group's counts under the group's lock,
// then OnChange. It must be called by ep's single writer. A result that
// changes nothing takes no lock. It reports whether a change was
// committed: not if ep was removed meanwhile.
func (g *Group) apply(ep *endpoint, mode Mode, cfg Config, r Result, now time.Time) bool {
	old := ep.status
	next, tr := old.Next(r, *g.thresholds.Load(), now)
	if next == old {
		return false
	}
	g.emitMu.Lock()
	defer g.emitMu.Unlock()
	g.mu.Lock()
	if ep.removed || ep.status != old {
		g.mu.Unlock()
		return false
	}
	ep.status = next
	if old.Health == Healthy {
		g.healthy--
	}
	if next.Health == Healthy {
		g.healthy++
	}
	healthy, total := g.healthy, len(g.endpoints)
	g.mu.Unlock()

	if g.onChange != nil {
		ch := Change{
			Cluster: g.cluster, Address: ep.address,
			Old: old, New: next, Transition: tr, Result: r, Mode: mode,
			Healthy: healthy, Total: total,
		}
		if next.Health == Unhealthy {
			ch.Hint = Hint(next, r, cfg)
		}
		g.onChange(ch)
	}
	return true
}
