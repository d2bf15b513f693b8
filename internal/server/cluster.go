package server

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

// drainPoll is how often a draining endpoint's in-flight count is looked
// at. An endpoint is drained once two looks in a row find nothing in flight:
// the second look covers a request that picked the endpoint just before the
// picker without it was swapped in and had not yet counted itself.
const drainPoll = 50 * time.Millisecond

// endpointRT is the running side of one endpoint: its data-path handle and
// whether it is draining.
type endpointRT struct {
	ep       *balancer.Endpoint
	draining bool
	// stopDrain cancels the drain when the endpoint is added back.
	stopDrain context.CancelFunc
}

// clusterRT runs one cluster: the checker group probing its endpoints, the
// balancer whose picker the data paths read, and the goroutine that
// rebuilds that picker.
//
// Every health change is written to the store and applied here in O(1): an
// endpoint that stops being routable is excluded from the picker in force
// at once (balancer.Endpoint.Exclude), and the picker is rebuilt from the
// store in the background, where a burst of changes (10,000 endpoints
// admitted at start-up) costs one build rather than one each. Only a change
// of panic mode, which changes what every transport-failed endpoint gets,
// rebuilds at once.
type clusterRT struct {
	s     *Server
	name  string
	bal   *balancer.Cluster
	group *checker.Group
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the builder and the drains
	// kick asks the builder for a build; it holds at most one request, so
	// requests made while a build runs are served by one more build.
	kick chan struct{}

	// startup marks the clusters of the first configuration, whose first
	// round of probes makes the proxy ready.
	startup bool

	mu        sync.Mutex
	cfg       config.Cluster
	policy    balancer.Policy
	endpoints map[string]*endpointRT
	// members is what the picker in force was built from; a rebuild that
	// would produce the same is skipped.
	members []balancer.Member
	built   bool
	// healthy, judged (not pending) and unprobed (pending, never probed)
	// count the members as of the last build, with the changes applied
	// since.
	healthy, judged, unprobed int
	panic                     bool
	serving                   bool
	ready                     bool
	// removed is set when the cluster left the configuration; the cluster
	// is retired once its endpoints have drained, unless a reload brings
	// it back first.
	removed bool
}

func newClusterRT(s *Server, cfg config.Cluster, startup bool) *clusterRT {
	ctx, cancel := context.WithCancel(context.Background())
	rt := &clusterRT{
		s:         s,
		name:      cfg.Name,
		bal:       balancer.NewCluster(cfg.Name),
		log:       s.log,
		ctx:       ctx,
		cancel:    cancel,
		startup:   startup,
		cfg:       cfg,
		endpoints: map[string]*endpointRT{},
		kick:      make(chan struct{}, 1),
	}
	rt.policy = policyFor(cfg.LBPolicy)
	rt.group = checker.NewGroup(cfg.HealthCheck, checker.GroupOptions{
		Cluster:  cfg.Name,
		Logger:   s.log,
		OnChange: rt.changed,
		OnProbe:  func(address string, r checker.Result) { s.metrics.probe(cfg.Name, address, r) },
	})
	rt.wg.Add(1)
	go rt.builder()
	return rt
}

func policyFor(name config.LBPolicy) balancer.Policy {
	if p, ok := balancer.PolicyByName(string(name)); ok {
		return p
	}
	// The config package only lets registered names through.
	p, _ := balancer.PolicyByName(string(config.RoundRobin))
	return p
}

// routable reports whether an endpoint in status st takes traffic.
func routable(st checker.Status, panic bool) bool {
	return st.Health == checker.Healthy || (panic && st.PanicEligible())
}

// unprobed reports whether an endpoint has had no probe result yet.
func unprobed(st checker.Status) bool {
	return st.Health == checker.Pending && st.Failures == 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// changed records a prober's status change in the store and applies it.
// When it returns, an endpoint that stopped being routable gets no new
// connection or RPC: the checker logs the eviction only after that. An
// endpoint that became routable gets traffic from the next build, which the
// builder makes at once.
func (rt *clusterRT) changed(ch checker.Change) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	// Under mu, so that a build reads the store either before this change
	// and its counts, or after both.
	if err := rt.s.store.SetEndpointStatus(ch.Cluster, ch.Address, ch.New); err != nil {
		rt.log.Error("store endpoint health", "cluster", ch.Cluster, "endpoint", ch.Address, "err", err)
	}
	rt.s.metrics.change(ch)
	er := rt.endpoints[ch.Address]
	if er == nil || er.draining || !rt.built {
		rt.kickBuild()
		return
	}
	was, now := routable(ch.Old, rt.panic), routable(ch.New, rt.panic)
	rt.healthy += b2i(ch.New.Health == checker.Healthy) - b2i(ch.Old.Health == checker.Healthy)
	rt.judged += b2i(ch.New.Health != checker.Pending) - b2i(ch.Old.Health != checker.Pending)
	rt.unprobed += b2i(unprobed(ch.New)) - b2i(unprobed(ch.Old))
	if balancer.PanicMode(rt.cfg.PanicThreshold, rt.healthy, rt.judged) != rt.panic {
		rt.buildLocked()
		return
	}
	if was && !now {
		er.ep.Exclude()
	}
	if was != now {
		rt.kickBuild()
	}
	rt.publishServing(false)
	rt.checkReady()
}

// builder makes the builds kickBuild asks for, until the cluster is closed.
func (rt *clusterRT) builder() {
	defer rt.wg.Done()
	for {
		select {
		case <-rt.kick:
			rt.mu.Lock()
			rt.buildLocked()
			rt.mu.Unlock()
		case <-rt.ctx.Done():
			return
		}
	}
}

// kickBuild asks the builder for a build.
func (rt *clusterRT) kickBuild() {
	select {
	case rt.kick <- struct{}{}:
	default:
	}
}

// buildLocked reads the cluster's endpoints from the store, recounts them,
// and installs a new picker if what the data path should see has changed.
// The caller holds rt.mu.
func (rt *clusterRT) buildLocked() {
	rows, err := rt.s.store.Snapshot().EndpointsByCluster(nil, rt.name)
	if err != nil {
		rt.log.Error("read cluster endpoints", "cluster", rt.name, "err", err)
		return
	}
	members := make([]balancer.Member, 0, len(rows))
	rt.healthy, rt.judged, rt.unprobed = 0, 0, 0
	for _, r := range rows {
		er := rt.endpoints[r.Address]
		if er == nil || er.draining || r.Status.Health == checker.Draining {
			continue
		}
		rt.healthy += b2i(r.Status.Health == checker.Healthy)
		rt.judged += b2i(r.Status.Health != checker.Pending)
		rt.unprobed += b2i(unprobed(r.Status))
		members = append(members, balancer.Member{
			Endpoint:      er.ep,
			Weight:        r.Weight,
			Healthy:       r.Status.Health == checker.Healthy,
			PanicEligible: r.Status.PanicEligible(),
			Pending:       r.Status.Health == checker.Pending,
		})
	}
	if !rt.built || !slices.Equal(members, rt.members) {
		snap := rt.bal.Update(rt.policy, rt.cfg.PanicThreshold, members)
		first := !rt.built
		rt.members, rt.built = members, true
		rt.observe(snap, first)
	}
	rt.checkReady()
}

// checkReady notes the end of the cluster's first round of probes.
func (rt *clusterRT) checkReady() {
	if rt.ready || !rt.built || rt.unprobed > 0 {
		return
	}
	rt.ready = true
	if rt.startup {
		rt.s.clusterReady()
	}
}

// publishServing publishes whether the cluster has a healthy endpoint as
// the proxy's own health service named after the cluster.
func (rt *clusterRT) publishServing(force bool) {
	if serving := rt.healthy > 0; serving != rt.serving || force {
		rt.serving = serving
		rt.s.setClusterServing(rt.name, serving)
	}
}

// observe logs and publishes what a new snapshot changed: panic mode and
// whether the cluster can serve.
func (rt *clusterRT) observe(snap *balancer.Snapshot, first bool) {
	if snap.Panic != rt.panic {
		rt.panic = snap.Panic
		if _, err := rt.s.store.SetClusterPanic(rt.name, snap.Panic); err != nil {
			rt.log.Error("store cluster panic", "cluster", rt.name, "err", err)
		}
		if snap.Panic {
			rt.log.Warn("cluster panic", "cluster", rt.name, "healthy", snap.Healthy, "total", snap.Total,
				"routable", len(snap.Routable), "panic_threshold", rt.cfg.PanicThreshold)
		} else {
			rt.log.Info("cluster recovered", "cluster", rt.name, "healthy", snap.Healthy, "total", snap.Total)
		}
	}
	rt.s.metrics.cluster(rt.name, snap)
	rt.publishServing(first)
}

// clusterPlan is what a new configuration changes in one running cluster.
type clusterPlan struct {
	cfg           config.Cluster
	added         []config.Endpoint
	readded       []config.Endpoint // draining endpoints that come back
	removed       []string
	reweighted    []config.Endpoint
	healthChanged bool
	policyChanged bool
}

// keep reports whether the cluster runs cfg already (its position in the
// file aside), and if so takes cfg as its configuration: a reload then has
// nothing to plan, write or commit for it. This is what keeps a reload's
// work proportional to what changed: comparing a cluster is a few field
// and endpoint comparisons, planning it builds maps and reads the store.
// The caller holds the server's lock.
func (rt *clusterRT) keep(cfg config.Cluster) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	same := !rt.removed && cfg.Name == rt.cfg.Name && cfg.LBPolicy == rt.cfg.LBPolicy &&
		cfg.PanicThreshold == rt.cfg.PanicThreshold && cfg.HealthCheck == rt.cfg.HealthCheck &&
		slices.EqualFunc(cfg.Endpoints, rt.cfg.Endpoints, func(a, b config.Endpoint) bool {
			return a.Address == b.Address && a.Weight == b.Weight
		})
	if same {
		rt.cfg = cfg
	}
	return same
}

// plan compares cfg with what runs. The caller holds the server's lock.
func (rt *clusterRT) plan(cfg config.Cluster) clusterPlan {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	p := clusterPlan{
		cfg:           cfg,
		healthChanged: cfg.HealthCheck != rt.cfg.HealthCheck,
		policyChanged: cfg.LBPolicy != rt.cfg.LBPolicy || cfg.PanicThreshold != rt.cfg.PanicThreshold,
	}
	oldWeights := map[string]uint32{}
	for _, e := range rt.cfg.Endpoints {
		oldWeights[e.Address] = e.Weight
	}
	if rt.removed {
		oldWeights = map[string]uint32{}
	}
	keep := map[string]bool{}
	for _, e := range cfg.Endpoints {
		keep[e.Address] = true
		er := rt.endpoints[e.Address]
		switch {
		case er == nil:
			p.added = append(p.added, e)
		case er.draining:
			p.readded = append(p.readded, e)
		case oldWeights[e.Address] != e.Weight:
			p.reweighted = append(p.reweighted, e)
		}
	}
	for addr, er := range rt.endpoints {
		if !keep[addr] && !er.draining {
			p.removed = append(p.removed, addr)
		}
	}
	slices.Sort(p.removed)
	return p
}

// write records the plan in the store, inside the reload's transaction.
func (rt *clusterRT) write(w state.Writer, p clusterPlan, now time.Time) error {
	row, err := w.Cluster(nil, rt.name)
	if err != nil {
		return err
	}
	if row == nil || p.healthChanged || p.policyChanged || rt.removed {
		n := &state.Cluster{Name: rt.name, LBPolicy: p.cfg.LBPolicy, PanicThreshold: p.cfg.PanicThreshold,
			HealthCheck: p.cfg.HealthCheck}
		if row != nil {
			n.Panic = row.Panic
		}
		if err := w.UpsertCluster(n); err != nil {
			return err
		}
	}
	mode := p.cfg.HealthCheck.Mode
	for _, e := range slices.Concat(p.added, p.readded) {
		row := &state.Endpoint{Cluster: rt.name, Address: e.Address, Weight: e.Weight, Check: mode,
			Status: checker.Status{Health: checker.Pending, Since: now}}
		if err := w.UpsertEndpoint(row); err != nil {
			return err
		}
	}
	for _, addr := range p.removed {
		row, err := w.Endpoint(nil, rt.name, addr)
		if err != nil || row == nil {
			return err
		}
		n := *row
		n.Status.Health, n.Status.Since = checker.Draining, now
		if err := w.UpsertEndpoint(&n); err != nil {
			return err
		}
	}
	weights := map[string]uint32{}
	for _, e := range p.reweighted {
		weights[e.Address] = e.Weight
	}
	if len(weights) > 0 || p.healthChanged {
		rows, err := w.EndpointsByCluster(nil, rt.name)
		if err != nil {
			return err
		}
		for _, r := range rows {
			wgt, reweigh := weights[r.Address]
			if r.Status.Health == checker.Draining || (!reweigh && r.Check == mode) {
				continue
			}
			n := *r
			n.Check = mode
			if reweigh {
				n.Weight = wgt
			}
			if err := w.UpsertEndpoint(&n); err != nil {
				return err
			}
		}
	}
	return nil
}

// commit makes the running cluster match the plan, after the store has.
// It logs "endpoint added" and "endpoint removed" when reload is true.
//
// The checker is called without rt.mu held: a prober reporting a change
// rebuilds the picker (which takes rt.mu) while Remove waits for that
// prober to stop.
func (rt *clusterRT) commit(p clusterPlan, reload bool, drainTimeout time.Duration) {
	rt.mu.Lock()
	var removed []*endpointRT
	for _, e := range slices.Concat(p.added, p.readded) {
		// A draining endpoint may have finished draining since plan
		// looked: then it is new again.
		switch er := rt.endpoints[e.Address]; {
		case er == nil:
			rt.endpoints[e.Address] = &endpointRT{ep: balancer.NewEndpoint(e.Address)}
		case er.draining:
			er.draining = false
			er.stopDrain()
		}
	}
	for _, addr := range p.removed {
		er := rt.endpoints[addr]
		er.draining = true
		removed = append(removed, er)
	}
	rt.cfg, rt.removed = p.cfg, false
	rt.policy = policyFor(p.cfg.LBPolicy)
	if p.policyChanged {
		rt.built = false
	}
	// The picker without the removed endpoints (and with the new policy
	// and weights) is in force before anything is logged.
	rt.buildLocked()
	rt.mu.Unlock()

	if p.healthChanged {
		rt.group.Reconfigure(p.cfg.HealthCheck)
	}
	for _, e := range slices.Concat(p.added, p.readded) {
		rt.group.Add(e.Address, checker.Status{Health: checker.Pending, Since: time.Now()})
		if reload {
			rt.log.Info("endpoint added", "cluster", rt.name, "endpoint", e.Address)
		}
	}
	for i, addr := range p.removed {
		rt.group.Remove(addr)
		rt.mu.Lock()
		if removed[i].draining { // not added back meanwhile
			rt.startDrain(addr, removed[i], drainTimeout)
		}
		rt.mu.Unlock()
		rt.log.Info("endpoint removed", "cluster", rt.name, "endpoint", addr, "drain_timeout", drainTimeout.String())
	}
}

// markRemoved notes that the cluster left the configuration; it is retired
// once its endpoints have drained.
func (rt *clusterRT) markRemoved() {
	rt.mu.Lock()
	rt.removed = true
	rt.mu.Unlock()
	if rt.isRetirable() {
		rt.s.retireLater(rt)
	}
}

// isRetirable reports whether the cluster was removed and has drained.
func (rt *clusterRT) isRetirable() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.removed && len(rt.endpoints) == 0
}

// startDrain waits, in a goroutine the cluster owns, until nothing is in
// flight on a removed endpoint or drainTimeout passes (then cuts what is
// left), and forgets the endpoint. The caller holds rt.mu.
func (rt *clusterRT) startDrain(addr string, er *endpointRT, drainTimeout time.Duration) {
	ctx, cancel := context.WithCancel(rt.ctx)
	er.stopDrain = cancel
	rt.wg.Add(1)
	go func() {
		defer rt.wg.Done()
		defer cancel()
		cut := time.NewTimer(drainTimeout)
		defer cut.Stop()
		tick := time.NewTicker(drainPoll)
		defer tick.Stop()
		for quiet := 0; quiet < 2; {
			select {
			case <-ctx.Done():
				if rt.ctx.Err() == nil {
					return // added back by a reload
				}
				quiet = 2 // the server is stopping: close now
			case <-cut.C:
				quiet = 2
			case <-tick.C:
				if er.ep.Inflight() == 0 {
					quiet++
				} else {
					quiet = 0
				}
			}
		}
		rt.finishDrain(addr, er)
	}()
}

// finishDrain cuts whatever is still open to a drained endpoint and
// deletes it from the store.
func (rt *clusterRT) finishDrain(addr string, er *endpointRT) {
	rt.mu.Lock()
	if rt.endpoints[addr] != er || !er.draining {
		rt.mu.Unlock()
		return
	}
	delete(rt.endpoints, addr)
	retire := rt.removed && len(rt.endpoints) == 0
	rt.mu.Unlock()

	// Closing the endpoint cuts what is still open to it and makes the
	// data paths close their connections to it.
	er.ep.Close()
	err := rt.s.store.Update(func(w state.Writer) error {
		row, err := w.Endpoint(nil, rt.name, addr)
		if err != nil || row == nil || row.Status.Health != checker.Draining {
			return err
		}
		return w.DeleteEndpointByAddress(rt.name, addr)
	})
	if err != nil {
		rt.log.Error("delete drained endpoint", "cluster", rt.name, "endpoint", addr, "err", err)
	}
	rt.log.Debug("endpoint drained", "cluster", rt.name, "endpoint", addr)
	if retire {
		rt.s.retireLater(rt)
	}
}

// close stops everything the cluster runs: probers, the watcher and the
// drains (which cut what is still in flight), and closes the endpoints.
func (rt *clusterRT) close() {
	rt.cancel()
	rt.group.Close()
	rt.wg.Wait()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for addr, er := range rt.endpoints {
		er.ep.Close()
		delete(rt.endpoints, addr)
	}
}
