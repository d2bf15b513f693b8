package pool

import (
	"time"

	"github.com/vigil-proxy/vigil/balancer/slowstart"
	"github.com/vigil-proxy/vigil/balancer/wrr"
)

// Slow start: an endpoint admitted or readmitted while Spec.SlowStart is
// set ramps from min_weight_percent of its weight to all of it over the
// window (package slowstart's formula). The pickers only take integer
// weights fixed at build, and Pick must stay lock- and allocation-free,
// so the ramp is a series of builds: while some member ramps, the ramp
// goroutine (ramps) rebuilds the picker every Step (window/10, at least
// slowstart.MinStep), and stops once the last ramp is over. Each build
// reads the weights at p.now(); while a member ramps every weight is
// scaled by slowstart.Scale, so that a fraction of a small weight still
// counts.
//
// Ramps start and end only under p.mu: startRamp at an admission or a
// readmission (the active check's, or the end of an ejection); stopRamp
// when the member leaves the healthy set (evicted, ejected, removed,
// added afresh), when its window is over, or when slow start is turned
// off. A change of the settings keeps the ramps in progress: their start
// stays, and the new window and shape apply from the next build.

// ramps rebuilds the picker of a ramping cluster at a bounded rate, until
// the pool closes.
func (p *Pool) ramps() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	armed := false
	for {
		var next time.Duration
		select {
		case <-p.rampKick:
			if armed {
				// A step is due already. The ramp just begun needs no
				// build of its own: the build that made its endpoint
				// routable (the builder's) weighed it at its start.
				continue
			}
			p.mu.Lock()
			if !p.closed && p.ramping > 0 && p.spec.SlowStart != nil {
				next = p.spec.SlowStart.Step()
			}
			p.mu.Unlock()
		case <-timer.C:
			armed = false
			p.mu.Lock()
			if !p.closed {
				next = p.rampLocked()
			}
			p.mu.Unlock()
		case <-p.ctx.Done():
			return
		}
		if next > 0 {
			timer.Reset(next)
			armed = true
		}
	}
}

// rampLocked does one step of the ramps: ramps whose window is over end,
// and the picker is rebuilt with the weights of now. It returns when the
// next step is due, or 0 when nothing ramps any more (then no further
// build is made for slow start). p.mu must be held.
func (p *Pool) rampLocked() time.Duration {
	cfg := p.spec.SlowStart
	if p.ramping == 0 || cfg == nil {
		return 0
	}
	now := p.now()
	for _, m := range p.members {
		if !m.rampSince.IsZero() && !cfg.Ramping(now.Sub(m.rampSince)) {
			p.stopRampLocked(m)
		}
	}
	p.buildLocked()
	p.checkReadyLocked()
	p.flushLocked()
	if p.ramping == 0 {
		return 0
	}
	return cfg.Step()
}

// admittedLocked notes that m became healthy and routable (admitted, or
// readmitted when returning): with slow start on, its ramp starts now. A
// returning member is weighed on reports from after its return
// (load.go); a first admission keeps the reports that came before it,
// which its probe connection streamed since it opened. p.mu must be held;
// the caller settles, and the build that makes m routable already weighs
// it at the start of its ramp.
func (p *Pool) admittedLocked(m *member, returning bool) {
	if returning {
		m.load.Restart()
	}
	if p.spec.SlowStart == nil || m.draining {
		return
	}
	if m.rampSince.IsZero() {
		p.ramping++
	}
	m.rampSince = p.now()
	select {
	case p.rampKick <- struct{}{}:
	default:
	}
}

// stopRampLocked ends m's ramp, if it has one. p.mu must be held.
func (p *Pool) stopRampLocked(m *member) {
	if !m.rampSince.IsZero() {
		m.rampSince = time.Time{}
		p.ramping--
	}
}

// configureSlowStartLocked applies a change of Spec.SlowStart: turned
// off, every ramp ends now; otherwise the ramps in progress go on from
// their start under the new settings. p.mu must be held; the caller
// settles (which rebuilds at once).
func (p *Pool) configureSlowStartLocked() {
	if p.spec.SlowStart == nil {
		for _, m := range p.members {
			p.stopRampLocked(m)
		}
		return
	}
	select {
	case p.rampKick <- struct{}{}:
	default:
	}
}

// factorLocked is the share of its weight m gets now: 1 unless it ramps.
// p.mu must be held.
func (p *Pool) factorLocked(m *member, now time.Time) float64 {
	if m.rampSince.IsZero() || p.spec.SlowStart == nil {
		return 1
	}
	return p.spec.SlowStart.Factor(now.Sub(m.rampSince))
}

// baseWeightLocked is m's weight before slow start: its load weight of
// the latest build under weighted_round_robin (load.go), else its
// configured weight. p.mu must be held.
func (p *Pool) baseWeightLocked(m *member) float64 {
	if p.spec.loadAware() {
		return m.loadWeight
	}
	return float64(m.weight)
}

// effectiveWeightLocked is the weight traffic is spread by for m now.
// p.mu must be held.
func (p *Pool) effectiveWeightLocked(m *member, now time.Time) float64 {
	return p.baseWeightLocked(m) * p.factorLocked(m, now)
}

// pickerWeightLocked is m's weight in a picker built now: its weight
// while nothing ramps (the pickers are then what they were before slow
// start existed), else its effective weight scaled by slowstart.Scale.
// p.mu must be held.
func (p *Pool) pickerWeightLocked(m *member, now time.Time, heaviest float64) uint32 {
	if p.spec.loadAware() {
		// Load weights are on their own scale: the heaviest gets
		// wrr.MaxPickerWeight, which resolves a ramp too.
		return wrr.PickerWeight(m.loadWeight*p.factorLocked(m, now), heaviest)
	}
	if p.ramping == 0 {
		return m.weight
	}
	return slowstart.PickerWeight(m.weight, p.factorLocked(m, now))
}

// EffectiveWeight returns the weight the endpoint at address gets now
// (its weight, or less while slow start ramps it up), and whether the
// pool has it.
func (p *Pool) EffectiveWeight(address string) (float64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.members[address]
	if m == nil {
		return 0, false
	}
	return p.effectiveWeightLocked(m, p.now()), true
}
