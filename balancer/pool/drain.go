package pool

import (
	"context"
	"time"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
)

// drainPoll is how often a draining endpoint's in-flight count is looked
// at. An endpoint is drained once two looks in a row find nothing in flight:
// the second look covers a request that picked the endpoint just before the
// picker without it was swapped in and had not yet counted itself.
const drainPoll = 50 * time.Millisecond

// startDrainLocked waits, in a goroutine the pool owns, until nothing is
// in flight on the removed m or the drain timeout passes (then cuts what
// is left), and forgets m. p.mu must be held.
func (p *Pool) startDrainLocked(m *member) {
	ctx, cancel := context.WithCancel(p.ctx)
	m.stopDrain = cancel
	timeout := p.spec.drainTimeout()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer cancel()
		cut := time.NewTimer(timeout)
		defer cut.Stop()
		tick := time.NewTicker(drainPoll)
		defer tick.Stop()
		for quiet := 0; quiet < 2; {
			select {
			case <-ctx.Done():
				if p.ctx.Err() == nil {
					return // added back
				}
				quiet = 2 // the pool is closing: cut now
			case <-cut.C:
				quiet = 2
			case <-tick.C:
				if m.ep.Inflight() == 0 {
					quiet++
				} else {
					quiet = 0
				}
			}
		}
		p.finishDrain(m)
	}()
}

// finishDrain forgets a drained endpoint and closes it, which cuts
// whatever is still open to it and makes the data paths close their
// connections to it.
func (p *Pool) finishDrain(m *member) {
	p.mu.Lock()
	if p.members[m.address] != m || !m.draining {
		p.mu.Unlock()
		return
	}
	delete(p.members, m.address)
	if len(p.members) == 0 {
		close(p.empty)
	}
	p.emitLocked(p.endpointEvent(event.EndpointDrained, m))
	p.flushLocked()
	p.mu.Unlock()
	m.ep.Close()
}
