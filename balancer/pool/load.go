package pool

import (
	"time"

	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
)

// Load-aware weights (lb_policy weighted_round_robin, package wrr): the
// checker streams each endpoint's ORCA load reports (Group.SetLoadReports)
// and loadReport records them in the member's wrr.State. The weights reach
// the picker only through builds: the weigh goroutine (weigh) rebuilds the
// picker every wrr.UpdatePeriod while the policy is weighted_round_robin,
// and every other build (a health change, a ramp step) weighs the members
// at that moment too. Health still decides who is in the picker; the
// reports only weigh the healthy ones. The weights are computed over the
// healthy, unejected members (wrr.Weights: the mean for those without
// one, round robin below two weighted), scaled so that the heaviest is
// wrr.MaxPickerWeight, and multiplied by slow start's factor while a
// member ramps.
//
// A member's blackout starts again when it is readmitted (gRFC A58 does
// so when a subchannel becomes READY): it is weighed on reports from
// after it came back. Its first admission does not restart it: the
// reports before it came over the probe connection that admitted it, as
// fresh as any after, and dropping them lost the only report of a
// backend that reports rarely (grpc-go's ORCA service: at once, then
// every 30 s) whenever the report beat the first health answer.

// LoadState is what an endpoint's load reports say, as the pool keeps it.
type LoadState struct {
	// Report is the latest report, At when it came (zero: none yet).
	Report wrr.Report
	At     time.Time
	// Weight is the weight its reports give it now, 0 when they give none
	// (no report with qps and utilization, blackout, expired).
	Weight float64
}

// loadAware reports whether the spec weighs endpoints by load reports.
func (s Spec) loadAware() bool {
	_, ok := s.policy().(wrr.Policy)
	return ok
}

// loadConfig is the load_reports section in force, defaults if unset.
func (s Spec) loadConfig() wrr.Config {
	if s.LoadReports == nil {
		return wrr.DefaultConfig()
	}
	return *s.LoadReports
}

// loadPeriod is the report period to ask the checker for; 0: none.
func (s Spec) loadPeriod() time.Duration {
	if !s.loadAware() {
		return 0
	}
	return s.loadConfig().Period
}

func sameLoadReports(a, b *wrr.Config) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

// loadReport records a report of the endpoint at address (the checker's
// OnLoadReport, from its load-report goroutine).
func (p *Pool) loadReport(address string, r checker.LoadReport) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.members[address]
	if m == nil || m.draining || p.closed || !p.spec.loadAware() {
		return
	}
	m.load.Report(wrr.Report{
		CPUUtilization: r.CPUUtilization, ApplicationUtilization: r.ApplicationUtilization,
		QPS: r.QPS, EPS: r.EPS,
	}, p.now(), p.spec.loadConfig().ErrorPenalty)
}

// weigh rebuilds a weighted_round_robin cluster's picker every
// wrr.UpdatePeriod, until the pool closes; it sleeps while the policy is
// another.
func (p *Pool) weigh() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	for {
		select {
		case <-p.weighKick:
		case <-timer.C:
			armed = false
			p.mu.Lock()
			if !p.closed && p.spec.loadAware() {
				p.buildLocked()
				p.checkReadyLocked()
				p.flushLocked()
			}
			p.mu.Unlock()
		case <-p.ctx.Done():
			return
		}
		p.mu.Lock()
		on := !p.closed && p.spec.loadAware()
		p.mu.Unlock()
		if on && !armed {
			timer.Reset(p.weighEvery)
			armed = true
		}
	}
}

// configureLoadLocked applies a change of policy or of load_reports:
// leaving weighted_round_robin forgets every report, so that coming back
// weighs on fresh ones (after a blackout). p.mu must be held; the caller
// tells the checker (loadPeriod) and settles.
func (p *Pool) configureLoadLocked() {
	if !p.spec.loadAware() {
		for _, m := range p.members {
			m.load, m.loadWeight = wrr.State{}, 0
		}
	}
	select {
	case p.weighKick <- struct{}{}:
	default:
	}
}

// loadWeighLocked sets every member's loadWeight for a build at now: the
// weight its reports give it, the mean for a member without one, all 1
// below two weighted members (round robin). p.mu must be held.
func (p *Pool) loadWeighLocked(now time.Time) {
	cfg := p.spec.loadConfig()
	ws := p.scratch[:0]
	var in []*member
	for _, m := range p.members {
		if m.draining {
			continue
		}
		w := m.load.Weight(now, cfg)
		if m.status.Health != checker.Healthy || m.ej.Ejected {
			w = 0 // weighed (by the mean) only if panic routes to it
		}
		ws = append(ws, w)
		in = append(in, m)
	}
	wrr.Weights(ws)
	for i, m := range in {
		m.loadWeight = ws[i]
	}
	p.scratch = ws
}

// LoadState returns what the load reports of the endpoint at address say,
// and whether the pool has it and weighs by load reports.
func (p *Pool) LoadState(address string) (LoadState, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.members[address]
	if m == nil || !p.spec.loadAware() {
		return LoadState{}, false
	}
	return LoadState{Report: m.load.Last, At: m.load.At, Weight: m.load.Weight(p.now(), p.spec.loadConfig())}, true
}
