package pool

import (
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// changed applies one change the checker reports (GroupOptions.OnChange)
// to the endpoint's status and to everything derived from it.
func (p *Pool) changed(ch checker.Change) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.members[ch.Address]
	if m == nil || m.draining || p.closed {
		// Removed meanwhile: once removed, an endpoint's health no
		// longer changes.
		return
	}
	was := p.routableLocked(m)
	p.setStatusLocked(m, ch.New)
	m.check, m.hint = ch.Mode, ch.Hint
	kind := event.EndpointUpdated
	switch {
	case m.ej.Ejected:
		// Out already, and until the ejection ends: the check's verdict
		// is recorded, and decides then whether it is readmitted.
	case ch.Transition == checker.Admitted:
		kind = event.EndpointAdmitted
		p.admittedLocked(m, false)
	case ch.Transition == checker.Evicted:
		kind = event.EndpointEvicted
	case ch.Transition == checker.Readmitted:
		kind = event.EndpointReadmitted
		p.admittedLocked(m, true)
	}
	ev := p.endpointEvent(kind, m)
	if kind == event.EndpointEvicted {
		ev.Err = ch.Result.Err
	}
	p.emitLocked(ev)
	now := p.routableLocked(m)
	p.settleLocked(false, was != now, now && !m.inPicker)
	p.flushLocked()
}

// routableLocked reports whether m may be picked now: healthy and not
// ejected, or, while the cluster is in panic, unhealthy for transport
// reasons only or ejected (a transport-like cause). p.mu must be held.
func (p *Pool) routableLocked(m *member) bool {
	if m.draining {
		return false
	}
	if m.ej.Ejected {
		return p.panic
	}
	return m.status.Health == checker.Healthy || (p.panic && m.status.PanicEligible())
}

// excludeLocked makes m's exclusion what its health says: every picker,
// the one in force included, skips an endpoint that may not be picked.
// This is the only place that sets it. p.mu must be held.
func (p *Pool) excludeLocked(m *member) {
	m.ep.SetExcluded(!p.routableLocked(m))
}

// counts are one member's contributions to the pool's counts: an ejected
// member is not healthy.
func counts(st checker.Status, ejected bool) (healthy, judged, unprobed int) {
	if st.Health == checker.Healthy && !ejected {
		healthy = 1
	}
	if st.Health != checker.Pending && st.Health != checker.Draining {
		judged = 1
	}
	if st.Health == checker.Pending && st.Failures == 0 {
		unprobed = 1
	}
	return
}

// setStatusLocked changes m's status and the counts with it. p.mu must be
// held; m is not draining.
func (p *Pool) setStatusLocked(m *member, st checker.Status) {
	h0, j0, u0 := counts(m.status, m.ej.Ejected)
	h1, j1, u1 := counts(st, m.ej.Ejected)
	p.healthy += h1 - h0
	p.judged += j1 - j0
	p.unprobed += u1 - u0
	m.status = st
	if st.Health != checker.Healthy {
		p.stopRampLocked(m)
	}
	p.excludeLocked(m)
}

// addLocked makes m a pending member: new, or back while draining.
// p.mu must be held.
func (p *Pool) addLocked(m *member, now time.Time) {
	if len(p.members) == 0 {
		p.empty = make(chan struct{})
	}
	p.members[m.address] = m
	m.draining, m.stopDrain = false, nil
	m.check, m.hint = p.spec.HealthCheck.Mode, ""
	m.status = checker.Status{Health: checker.Pending, Since: now}
	m.ej = outlier.State{}
	p.stopRampLocked(m)
	m.ep.SetOutcomeWatch(p.watch)
	p.total++
	p.unprobed++
	p.excludeLocked(m)
}

// removeLocked makes m draining. p.mu must be held.
func (p *Pool) removeLocked(m *member, now time.Time) {
	h, j, u := counts(m.status, m.ej.Ejected)
	p.healthy -= h
	p.judged -= j
	p.unprobed -= u
	p.total--
	if m.ej.Ejected {
		p.ejected--
		m.ej = m.ej.End()
	}
	m.ep.SetOutcomeWatch(nil)
	p.stopRampLocked(m)
	m.draining = true
	m.status.Health, m.status.Since = checker.Draining, now
	p.excludeLocked(m)
}

// settleLocked brings what derives from the counts up to date after a
// change: panic mode (a change of it changes what every transport-failed
// endpoint may get, so the picker is rebuilt at once), the picker (at once
// when now is set, else by the builder when routable says the change
// made an endpoint routable or unroutable; missing says one became
// routable that the picker in force lacks, and the events wait for the
// build), whether the cluster can serve, and whether its first round of
// probes is done. p.mu must be held.
func (p *Pool) settleLocked(now, routable, missing bool) {
	inPanic := balancer.PanicMode(p.spec.PanicThreshold, p.healthy, p.judged)
	switch {
	case inPanic != p.panic:
		p.panic = inPanic
		for _, m := range p.members {
			p.excludeLocked(m)
		}
		p.buildLocked()
		kind := event.ClusterRecovered
		if inPanic {
			kind = event.ClusterPanic
		}
		ev := p.clusterEvent(kind)
		ev.Settings = p.settings()
		p.emitLocked(ev)
	case now:
		p.buildLocked()
	case routable:
		p.stale = p.stale || missing
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	if p.built {
		if serving := p.healthy > 0; serving != p.serving {
			p.serving = serving
			p.emitLocked(p.clusterEvent(event.ClusterServing))
		}
	}
	p.checkReadyLocked()
}

// checkReadyLocked notes the end of the first round of probes, once the
// picker in force has their results.
func (p *Pool) checkReadyLocked() {
	if !p.warmLocked() {
		return
	}
	if !p.isReady {
		p.isReady = true
		close(p.ready)
	}
	for _, ch := range p.warm {
		close(ch)
	}
	p.warm = nil
}

// settings are the cluster's settings for an event.
func (p *Pool) settings() *event.Settings {
	return &event.Settings{Policy: p.spec.policy().Name(), PanicThreshold: p.spec.PanicThreshold, HealthCheck: p.spec.HealthCheck}
}

// endpointEvent is an event about m, with the cluster's counts.
func (p *Pool) endpointEvent(kind event.Kind, m *member) event.Event {
	ev := p.clusterEvent(kind)
	ev.Address, ev.Source, ev.Weight = m.address, string(m.source), m.weight
	ev.Check, ev.Status, ev.Hint = m.check, shownStatus(m), m.hint
	ev.Ejection = ejectionOf(m)
	return ev
}

// clusterEvent is an event about the cluster, with its counts.
func (p *Pool) clusterEvent(kind event.Kind) event.Event {
	return event.Event{
		Kind: kind, Healthy: p.healthy, Total: p.total, Routable: p.routable,
		Panic: p.panic, Serving: p.serving,
	}
}

// emitLocked queues ev for the sinks. p.mu must be held.
func (p *Pool) emitLocked(ev event.Event) {
	ev.Time, ev.Cluster = time.Now(), p.name
	p.pending = append(p.pending, ev)
}

// flushLocked hands the queued events to the sinks, unless a build must
// come first (stale). p.mu must be held, so that every sink sees every
// pool's events in the order they happened.
func (p *Pool) flushLocked() {
	if len(p.pending) == 0 || p.stale {
		return
	}
	for _, s := range p.sinks {
		s.Handle(p.pending)
	}
	clear(p.pending)
	p.pending = p.pending[:0]
}
