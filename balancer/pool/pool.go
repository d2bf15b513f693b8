package pool

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
)

// Options configure a Pool.
type Options struct {
	// Sinks receive the pool's events (see event.Sink).
	Sinks []event.Sink
	// Logger receives the checker's warnings; nil means slog.Default().
	Logger *slog.Logger
	// OnProbe is called after every probe result, from the endpoint's
	// prober (see checker.GroupOptions.OnProbe).
	OnProbe func(address string, r checker.Result)
	// Startup marks the pool as part of the process's first
	// configuration: the events of its first plan say so (the eviction
	// log then names no endpoint added).
	Startup bool
}

// member is one endpoint of the pool. Its fields are guarded by Pool.mu.
type member struct {
	address string
	ep      *balancer.Endpoint
	weight  uint32
	source  Source
	status  checker.Status
	check   checker.Mode // the mode in use
	hint    string
	// inPicker: routable when the picker in force was built.
	inPicker bool
	// draining: removed from the spec; no probes, no new traffic.
	draining  bool
	stopDrain context.CancelFunc
	// ej is m's outlier ejection state (outlier.go): while ej.Ejected, m
	// counts as unhealthy for a transport-like cause whatever status says.
	ej outlier.State
	// rampSince is when m was last admitted or readmitted while slow
	// start was on (slowstart.go); zero when it does not ramp.
	rampSince time.Time
	// load is what m's load reports say, loadWeight its weight in the
	// latest build under weighted_round_robin (load.go).
	load       wrr.State
	loadWeight float64
}

// Pool is one cluster. All methods are safe for concurrent use.
type Pool struct {
	name    string
	bal     *balancer.Cluster
	group   *checker.Group
	sinks   []event.Sink
	startup bool

	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the builder and the drains
	// kick asks the builder for a build; it holds at most one request, so
	// requests made while a build runs are served by one more build.
	kick chan struct{}

	applyMu sync.Mutex

	mu         sync.Mutex
	spec       Spec
	applied    bool
	discovered map[Source][]Endpoint
	members    map[string]*member
	// healthy, judged (neither pending nor draining), unprobed (pending,
	// never probed) and total (not draining) count the members; only
	// setStatusLocked, addLocked and removeLocked change them.
	healthy, judged, unprobed, total int
	panic                            bool
	serving                          bool
	// built: a picker was installed; last is what it was built from.
	built bool
	last  []balancer.Member
	// stale: since the last build, an endpoint became routable that the
	// picker in force does not hold; until the builder has built, the
	// events wait (flushLocked), so that every event sinks get is in force.
	stale bool
	// routable counts the endpoints of the picker in force.
	routable int
	ready    chan struct{} // closed after the first round of probes
	isReady  bool
	// warm are the channels of Warm calls, closed once no member is
	// unprobed and the picker in force has the results.
	warm   []chan struct{}
	empty  chan struct{} // closed while the pool has no members
	closed bool
	// pending are the events of the critical section in progress; sinks
	// get them when it ends (flushLocked).
	pending []event.Event

	// Outlier detection (outlier.go): ejected counts the ejected members;
	// watch is what the members' endpoints report outcomes to (nil: off);
	// tripped carries the endpoints' signals, outlierKick wakes the
	// outlier goroutine after a change of settings; nextReview is when
	// the next interval ends.
	ejected     int
	watch       *balancer.OutcomeWatch
	tripped     chan struct{}
	outlierKick chan struct{}
	nextReview  time.Time

	// Slow start (slowstart.go): ramping counts the members with a ramp
	// in progress; rampKick wakes the ramp goroutine when one starts or
	// the settings change. now is the pool's clock for ramps, time.Now
	// outside tests, so that tests step weights without sleeping.
	ramping  int
	rampKick chan struct{}
	now      func() time.Time

	// Load weights (load.go): weighKick wakes the weigh goroutine after a
	// change of policy; it rebuilds every weighEvery (wrr.UpdatePeriod)
	// while the policy is weighted_round_robin. scratch is the weights'
	// buffer, reused by every build.
	weighKick  chan struct{}
	weighEvery time.Duration
	scratch    []float64
}

// New returns an empty pool called name. Nothing is probed until Apply.
func New(name string, opts Options) *Pool { return newPool(name, opts, true) }

// newPool is New; without builder, pickers are rebuilt only when a change
// needs it at once, and tests make the builder's builds themselves.
func newPool(name string, opts Options, builder bool) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{
		name:        name,
		bal:         balancer.NewCluster(name),
		sinks:       slices.Clone(opts.Sinks),
		startup:     opts.Startup,
		ctx:         ctx,
		cancel:      cancel,
		kick:        make(chan struct{}, 1),
		tripped:     make(chan struct{}, 1),
		outlierKick: make(chan struct{}, 1),
		rampKick:    make(chan struct{}, 1),
		weighKick:   make(chan struct{}, 1),
		weighEvery:  wrr.UpdatePeriod,
		now:         time.Now,
		discovered:  map[Source][]Endpoint{},
		members:     map[string]*member{},
		ready:       make(chan struct{}),
		empty:       make(chan struct{}),
	}
	close(p.empty)
	p.group = checker.NewGroup(checker.DefaultConfig(), checker.GroupOptions{
		Cluster:  name,
		Logger:   opts.Logger,
		OnChange: p.changed,
		OnProbe:  opts.OnProbe,

		OnLoadReport: p.loadReport,
	})
	if builder {
		p.wg.Add(4)
		go p.builder()
		go p.outliers()
		go p.ramps()
		go p.weigh()
	}
	return p
}

// Name is the cluster's name.
func (p *Pool) Name() string { return p.name }

// Cluster is the balancer the data paths pick from.
func (p *Pool) Cluster() *balancer.Cluster { return p.bal }

// Group is the checker group probing the pool's endpoints (for its probe
// statistics; the pool adds and removes its endpoints).
func (p *Pool) Group() *checker.Group { return p.group }

// Ready is closed once every endpoint of the first plan has been probed
// (or right after the first Apply, if it has none): the cluster is warm.
func (p *Pool) Ready() <-chan struct{} { return p.ready }

// Warm returns a channel closed once every endpoint the pool has now has
// been probed at least once (none is pending) and the picker in force has
// the results; at once when that holds already, or the pool is closed.
// Unlike Ready, which says it once of the first round, Warm asks of the
// endpoints of now: a cluster that a reload brings back, or fills again,
// is cold until its endpoints are judged.
func (p *Pool) Warm() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	if p.closed || p.warmLocked() {
		close(ch)
		return ch
	}
	p.warm = append(p.warm, ch)
	return ch
}

func (p *Pool) warmLocked() bool { return p.built && !p.stale && p.unprobed == 0 }

// Empty returns a channel that is closed while the pool has no endpoint,
// draining ones included.
func (p *Pool) Empty() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.empty
}

// Apply makes the pool what spec says and returns what that changed. It
// returns once the picker no longer routes to a removed endpoint and the
// new endpoints are being probed.
func (p *Pool) Apply(spec Spec) Plan {
	spec.HealthCheck.TLS = spec.TLS
	return p.update(func(plan *Plan) bool {
		if p.applied && spec.same(p.spec) {
			p.spec = spec
			return false
		}
		old, first := p.spec, !p.applied
		p.spec, p.applied = spec, true
		plan.New = first
		plan.PolicyChanged = !first && (old.policy() != spec.policy() || old.PanicThreshold != spec.PanicThreshold)
		plan.LoadReportsChanged = !first && (old.loadAware() != spec.loadAware() ||
			spec.loadAware() && !sameLoadReports(old.LoadReports, spec.LoadReports))
		if first || plan.LoadReportsChanged {
			p.configureLoadLocked()
		}
		plan.HealthCheckChanged = !first && old.HealthCheck != spec.HealthCheck
		if !first && old.TLS != spec.TLS {
			for _, m := range p.members {
				m.ep.SetTLS(spec.TLS)
			}
		}
		plan.OutlierChanged = !first && !sameOutlier(old.Outlier, spec.Outlier)
		if plan.OutlierChanged || first {
			p.configureOutliersLocked(time.Now())
		}
		plan.SlowStartChanged = !first && !sameSlowStart(old.SlowStart, spec.SlowStart)
		if plan.SlowStartChanged {
			p.configureSlowStartLocked()
		}
		if first || plan.PolicyChanged || plan.HealthCheckChanged {
			ev := p.clusterEvent(event.ClusterConfigured)
			ev.Settings = p.settings()
			p.emitLocked(ev)
		}
		if plan.PolicyChanged {
			p.built = false // a new policy or threshold: rebuild even if the members are the same
		}
		return true
	})
}

// SetDiscovered replaces the endpoints found by source (discovery) with
// the complete set it found, and returns what that changed; the same set
// again costs a comparison. Endpoints the spec lists too keep the listed
// weight. An endpoint the source says is terminating should be left out:
// the pool drains it as it does any endpoint that leaves (no new traffic,
// in-flight work finishes), and does not add one it never had.
func (p *Pool) SetDiscovered(source Source, endpoints []Endpoint) Plan {
	return p.update(func(*Plan) bool {
		if slices.Equal(p.discovered[source], endpoints) {
			return false
		}
		if len(endpoints) == 0 {
			delete(p.discovered, source)
		} else {
			p.discovered[source] = slices.Clone(endpoints)
		}
		return true
	})
}

// update runs change under p.mu and, if it says the pool may have to
// change, brings the members to what the pool now wants, as one plan:
// the picker and the events first, then the checker.
func (p *Pool) update(change func(plan *Plan) bool) Plan {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	plan := Plan{Cluster: p.name}
	if p.closed || !change(&plan) {
		p.mu.Unlock()
		return plan
	}
	work := p.reconcileLocked(&plan, plan.New && p.startup)
	p.settleLocked(true, false, false)
	p.flushLocked()
	hc, period := p.spec.HealthCheck, p.spec.loadPeriod()
	p.mu.Unlock()

	if plan.New || plan.HealthCheckChanged {
		p.group.Reconfigure(hc)
	}
	if plan.New || plan.LoadReportsChanged {
		p.group.SetLoadReports(period)
	}
	p.commit(work)
	return plan
}

// work is what a plan leaves for the checker, which is called without
// p.mu (see the package doc).
type work struct {
	add, remove []string
}

// reconcileLocked brings the members to what the spec and the discovered
// endpoints want, records it in plan, and returns the checker's part.
// p.mu must be held.
func (p *Pool) reconcileLocked(plan *Plan, startup bool) work {
	want := p.wantedLocked()
	var w work
	now := time.Now()
	for addr, wt := range want {
		m := p.members[addr]
		switch {
		case m == nil:
			m = &member{address: addr, ep: balancer.NewEndpoint(addr), weight: wt.weight, source: wt.source}
			m.ep.SetTLS(p.spec.TLS)
			p.addLocked(m, now)
		case m.draining:
			// Back before its drain ended: probed afresh.
			if m.stopDrain != nil {
				m.stopDrain()
			}
			m.weight, m.source = wt.weight, wt.source
			p.addLocked(m, now)
		default:
			if m.weight != wt.weight || m.source != wt.source {
				m.weight, m.source = wt.weight, wt.source
				plan.Changed = append(plan.Changed, addr)
				p.emitLocked(p.endpointEvent(event.EndpointChanged, m))
			}
			continue
		}
		plan.Added = append(plan.Added, addr)
		w.add = append(w.add, addr)
		ev := p.endpointEvent(event.EndpointAdded, m)
		ev.Startup = startup
		p.emitLocked(ev)
	}
	for addr, m := range p.members {
		if _, ok := want[addr]; ok || m.draining {
			continue
		}
		p.removeLocked(m, now)
		plan.Removed = append(plan.Removed, addr)
		w.remove = append(w.remove, addr)
		ev := p.endpointEvent(event.EndpointRemoved, m)
		ev.DrainTimeout = p.spec.drainTimeout()
		p.emitLocked(ev)
	}
	slices.Sort(plan.Added)
	slices.Sort(plan.Removed)
	slices.Sort(plan.Changed)
	slices.Sort(w.add)
	return w
}

// commit makes the checker probe what a plan added and stop probing what
// it removed, whose drains then start. p.applyMu must be held, p.mu not.
func (p *Pool) commit(w work) {
	for _, addr := range w.remove {
		p.group.Remove(addr)
		p.mu.Lock()
		if m := p.members[addr]; m != nil && m.draining && m.stopDrain == nil {
			p.startDrainLocked(m)
		}
		p.mu.Unlock()
	}
	for _, addr := range w.add {
		p.group.Add(addr, checker.Status{Health: checker.Pending, Since: time.Now()})
	}
}

// Close stops the probers, the builder and the drains (which cut what is
// still in flight), closes every endpoint and sends ClusterRemoved.
func (p *Pool) Close() {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.group.Close()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stale = false // no build will come: what waited goes out now
	if len(p.members) > 0 {
		close(p.empty)
	}
	if !p.isReady {
		p.isReady = true
		close(p.ready) // nobody waits for a closed pool
	}
	for _, ch := range p.warm {
		close(ch)
	}
	p.warm = nil
	for addr, m := range p.members {
		m.ep.Close()
		delete(p.members, addr)
	}
	p.emitLocked(event.Event{Kind: event.ClusterRemoved})
	p.flushLocked()
}

// EndpointState is one endpoint as the pool sees it.
type EndpointState struct {
	Address string
	Weight  uint32
	Source  Source
	Status  checker.Status
	Check   checker.Mode
	Hint    string
	// Routable: the data paths may pick it now.
	Routable bool
	// Ejection is its outlier ejection, zero when not ejected.
	Ejection event.Ejection
	// EffectiveWeight is the weight traffic is spread by now: Weight,
	// or less while slow start ramps it up.
	EffectiveWeight float64
}

// Endpoints returns the pool's endpoints, draining ones included, sorted
// by address.
func (p *Pool) Endpoints() []EndpointState {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]EndpointState, 0, len(p.members))
	now := p.now()
	for _, m := range p.members {
		out = append(out, EndpointState{
			Address: m.address, Weight: m.weight, Source: m.source, Status: shownStatus(m),
			Check: m.check, Hint: m.hint, Routable: p.routableLocked(m), Ejection: ejectionOf(m),
			EffectiveWeight: p.effectiveWeightLocked(m, now),
		})
	}
	slices.SortFunc(out, func(a, b EndpointState) int {
		switch {
		case a.Address < b.Address:
			return -1
		case a.Address > b.Address:
			return 1
		}
		return 0
	})
	return out
}

// Inflight returns the connections and RPCs in flight on the endpoint at
// address, and whether the pool has it.
func (p *Pool) Inflight(address string) (int64, bool) {
	p.mu.Lock()
	m := p.members[address]
	p.mu.Unlock()
	if m == nil {
		return 0, false
	}
	return m.ep.Inflight(), true
}

// Counts returns how many endpoints are healthy and how many there are
// (draining ones left out), and whether the cluster is in panic.
func (p *Pool) Counts() (healthy, total int, panic bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healthy, p.total, p.panic
}
