package pool

import (
	"slices"
	"strings"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// builder makes the builds settleLocked asks for, until the pool closes.
func (p *Pool) builder() {
	defer p.wg.Done()
	for {
		select {
		case <-p.kick:
			p.mu.Lock()
			if !p.closed {
				p.buildLocked()
				p.checkReadyLocked()
				p.flushLocked()
			}
			p.mu.Unlock()
		case <-p.ctx.Done():
			return
		}
	}
}

// buildLocked installs a picker over the members as they are, unless it
// would be the one in force. p.mu must be held.
func (p *Pool) buildLocked() {
	members := make([]balancer.Member, 0, p.total)
	now := p.now()
	heaviest := 0.0
	if p.spec.loadAware() {
		p.loadWeighLocked(now)
		for _, m := range p.members {
			heaviest = max(heaviest, m.loadWeight)
		}
	}
	for _, m := range p.members {
		if m.draining {
			continue
		}
		members = append(members, balancer.Member{
			Endpoint:      m.ep,
			Weight:        p.pickerWeightLocked(m, now, heaviest),
			Healthy:       m.status.Health == checker.Healthy && !m.ej.Ejected,
			PanicEligible: m.status.PanicEligible() || m.ej.Ejected,
			Pending:       m.status.Health == checker.Pending,
		})
	}
	// In address order, so that the same members make the same picker.
	slices.SortFunc(members, func(a, b balancer.Member) int {
		return strings.Compare(a.Endpoint.Address(), b.Endpoint.Address())
	})
	p.stale = false
	if p.built && slices.Equal(members, p.last) {
		return
	}
	for _, m := range p.members {
		m.inPicker = p.routableLocked(m)
	}
	first := !p.built
	snap := p.bal.Update(p.spec.policy(), p.spec.PanicThreshold, members)
	p.built, p.last, p.routable = true, members, len(snap.Routable)
	p.emitLocked(p.clusterEvent(event.PickerBuilt))
	if first {
		// The cluster's first picker: say whether it can serve, even if
		// it cannot.
		p.serving = p.healthy > 0
		p.emitLocked(p.clusterEvent(event.ClusterServing))
	}
}
