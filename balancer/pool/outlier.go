package pool

import (
	"slices"
	"strings"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/grpccode"
)

// Passive outlier detection: the data paths report every outcome to the
// endpoint (balancer.Endpoint.Report, atomics only); an endpoint whose
// consecutive failures reach the threshold signals p.tripped, and the
// outlier goroutine ejects it at once. Every interval the goroutine also
// judges failure rates and steps multipliers down, and it ends each
// ejection when its time is over. An ejection is one more input of
// routableLocked, changed only here, under p.mu, with the counts, the
// exclusion and the events in the same critical section as a health
// change: an ejection is an eviction, its end a readmission if the
// active check says healthy.

// outliers runs outlier detection's timed work until the pool closes.
func (p *Pool) outliers() {
	defer p.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-p.tripped:
		case <-p.outlierKick:
		case <-timer.C:
		case <-p.ctx.Done():
			return
		}
		p.mu.Lock()
		var next time.Time
		if !p.closed {
			next = p.reviewOutliersLocked(time.Now())
		}
		p.mu.Unlock()
		timer.Stop()
		if !next.IsZero() {
			timer.Reset(time.Until(next))
		}
	}
}

// configureOutliersLocked applies the spec's outlier settings: the
// endpoints report to a new watch (their counters start afresh); turned
// off, every ejection ends now. Ejections in force keep their end.
// p.mu must be held; the caller settles.
func (p *Pool) configureOutliersLocked(now time.Time) {
	cfg := p.spec.Outlier
	p.watch = nil
	if cfg != nil {
		p.watch = &balancer.OutcomeWatch{Threshold: uint32(max(cfg.ConsecutiveFailures, 0)), Rates: cfg.FailurePercentage > 0,
			Tripped: p.tripped}
		p.nextReview = now.Add(cfg.Interval)
	}
	for _, m := range p.members {
		if m.draining {
			continue
		}
		m.ep.SetOutcomeWatch(p.watch)
		if cfg == nil && m.ej.Ejected {
			p.endEjectionLocked(m)
		}
		if cfg == nil {
			m.ej = outlier.State{}
		}
	}
	select {
	case p.outlierKick <- struct{}{}:
	default:
	}
}

// reviewOutliersLocked does what is due at now: ejections whose time is
// over end, tripped endpoints are ejected, and at the end of an interval
// failure rates are judged and multipliers stepped down. It returns when
// it is next due (zero: never, outlier detection is off). p.mu must be
// held.
func (p *Pool) reviewOutliersLocked(now time.Time) time.Time {
	cfg := p.spec.Outlier
	if cfg == nil {
		return time.Time{}
	}
	changed, missing := false, false
	for _, m := range p.members {
		if m.ej.Expired(now) {
			p.endEjectionLocked(m)
			changed = true
			missing = missing || (p.routableLocked(m) && !m.inPicker)
		}
	}
	for _, m := range p.sortedMembersLocked() {
		if m.draining || !m.ep.TakeTripped() {
			continue
		}
		if p.ejectLocked(m, now, outlier.RuleConsecutive, int(m.ep.ConsecutiveFailures())) {
			changed = true
		} else {
			// Not ejected (the share is used up, or it is out already):
			// the next run of failures may trip it again.
			m.ep.RearmTrip()
		}
	}
	if !now.Before(p.nextReview) {
		changed = p.reviewIntervalLocked(*cfg, now) || changed
		p.nextReview = now.Add(cfg.Interval)
	}
	if changed {
		p.settleLocked(false, true, missing)
		p.flushLocked()
	}
	next := p.nextReview
	for _, m := range p.members {
		if m.ej.Ejected && m.ej.Until.Before(next) {
			next = m.ej.Until
		}
	}
	return next
}

// reviewIntervalLocked ends an interval: endpoints whose failed share
// exceeds failure_percentage are ejected, the worst first while the share
// allows, and those that did not fail step their multiplier down.
// p.mu must be held.
func (p *Pool) reviewIntervalLocked(cfg outlier.Config, now time.Time) bool {
	type rate struct {
		m                   *member
		successes, failures uint64
	}
	var over []rate
	for _, m := range p.sortedMembersLocked() {
		if m.draining {
			continue
		}
		s, f := m.ep.TakeOutcomes()
		m.ej = m.ej.Review(f)
		if !m.ej.Ejected && cfg.FailureRateExceeded(s, f) {
			over = append(over, rate{m, s, f})
		}
	}
	// The worst first: f1/(s1+f1) > f2/(s2+f2).
	slices.SortStableFunc(over, func(a, b rate) int {
		l, r := a.failures*(b.successes+b.failures), b.failures*(a.successes+a.failures)
		switch {
		case l > r:
			return -1
		case l < r:
			return 1
		}
		return 0
	})
	changed := false
	for _, o := range over {
		changed = p.ejectLocked(o.m, now, outlier.RuleFailurePercentage, int(o.failures)) || changed
	}
	return changed
}

// ejectLocked ejects m, if it is in (healthy, not ejected) and the
// cluster's share of ejections allows one more, and reports whether it
// did. p.mu must be held; the caller settles.
func (p *Pool) ejectLocked(m *member, now time.Time, rule outlier.Rule, failures int) bool {
	cfg := p.spec.Outlier
	if cfg == nil || m.draining || m.ej.Ejected || m.status.Health != checker.Healthy || !cfg.MayEject(p.total, p.ejected) {
		return false
	}
	p.setEjectionLocked(m, m.ej.Eject(*cfg, now, rule, grpccode.Name(m.ep.LastFailure()), failures))
	m.ep.ResetOutcomes()
	ev := p.endpointEvent(event.EndpointEvicted, m)
	ev.Outlier = true
	p.emitLocked(ev)
	return true
}

// endEjectionLocked ends m's ejection: readmitted if its active check
// says healthy, else it stays out until the check passes. p.mu must be
// held; the caller settles.
func (p *Pool) endEjectionLocked(m *member) {
	p.setEjectionLocked(m, m.ej.End())
	m.ep.ResetOutcomes()
	if m.status.Health != checker.Healthy {
		p.emitLocked(p.endpointEvent(event.EndpointUpdated, m))
		return
	}
	p.admittedLocked(m, true)
	ev := p.endpointEvent(event.EndpointReadmitted, m)
	ev.Outlier = true
	p.emitLocked(ev)
}

// setEjectionLocked changes m's ejection state and the counts with it.
// p.mu must be held.
func (p *Pool) setEjectionLocked(m *member, st outlier.State) {
	h0, _, _ := counts(m.status, m.ej.Ejected)
	h1, _, _ := counts(m.status, st.Ejected)
	p.healthy += h1 - h0
	switch {
	case st.Ejected && !m.ej.Ejected:
		p.ejected++
	case !st.Ejected && m.ej.Ejected:
		p.ejected--
	}
	m.ej = st
	if st.Ejected {
		p.stopRampLocked(m)
	}
	p.excludeLocked(m)
}

// sortedMembersLocked returns the members in address order, so that
// ejections under a share bound do not depend on map order. p.mu must be
// held.
func (p *Pool) sortedMembersLocked() []*member {
	ms := make([]*member, 0, len(p.members))
	for _, m := range p.members {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return strings.Compare(a.address, b.address) })
	return ms
}

// ejectionOf is m's ejection as events and EndpointState carry it.
func ejectionOf(m *member) event.Ejection {
	if !m.ej.Ejected {
		return event.Ejection{}
	}
	return event.Ejection{Since: m.ej.Since, Until: m.ej.Until, Count: m.ej.Multiplier, Rule: m.ej.Rule.String(),
		Reason: m.ej.Reason, Failures: m.ej.Failures}
}

// shownStatus is the health m shows the sinks and EndpointState: its
// active check's verdict, but while it is ejected, unhealthy since its
// ejection, for a transport-like cause (panic traffic may reach it), for
// the last failure's code.
func shownStatus(m *member) checker.Status {
	if !m.ej.Ejected {
		return m.status
	}
	return checker.Status{Health: checker.Unhealthy, Reason: m.ej.Reason, Cause: checker.CauseTransport,
		Since: m.ej.Since, Failures: m.ej.Failures}
}
