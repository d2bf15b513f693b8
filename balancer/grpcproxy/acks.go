package grpcproxy

import (
	"sync"
	"time"
)

// pingAckDelay is how long the proxy holds a peer's PING before acking
// it, at most (at least 0: acks go out at the clock's ticks).
//
// gRPC peers measure their connection with PINGs (grpc-go's bandwidth
// estimator): one as soon as DATA arrives after the previous PING was
// acked. Acked at once, that is a PING from the client and one from the
// backend for every RPC at low concurrency, and each costs the proxy a
// wake-up to read it and a write of its own to ack it (the next frames to
// that peer are a whole RPC away): a third of its system calls per RPC.
// Held until the next tick, PINGs come at most once per pingAckDelay per
// connection, whatever the rate of RPCs. The only effect on the peer is a
// longer round trip in its estimate (its window grows as much or more);
// keepalive timeouts are seconds. The PING itself is never delayed: only
// our answer, and RFC 9113 asks for answers, with a priority it leaves to
// the implementation (SHOULD).
const pingAckDelay = 5 * time.Millisecond

// maxHeldAcks bounds the PINGs a connection may have waiting for their
// ack: beyond, they are acked at once (a peer that sends PINGs faster than
// we ack them is not measuring its bandwidth).
const maxHeldAcks = 4

// ackClock acks the PINGs held by every connection of a proxy, once per
// pingAckDelay while some are held: one goroutine and one timer for the
// whole proxy, instead of a timer per connection re-armed per PING (whose
// cost to the runtime's poller was measured to outweigh the gain).
type ackClock struct {
	mu      sync.Mutex
	waiting []*h2writer // writers holding acks
	spare   []*h2writer
	kick    chan struct{}
}

func newAckClock() *ackClock { return &ackClock{kick: make(chan struct{}, 1)} }

// hold registers w, which holds an ack, for the next tick.
func (c *ackClock) hold(w *h2writer) {
	c.mu.Lock()
	c.waiting = append(c.waiting, w)
	first := len(c.waiting) == 1
	c.mu.Unlock()
	if first {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// run acks the held PINGs a tick after the first of them was held, until
// done is closed.
func (c *ackClock) run(done <-chan struct{}) {
	tick := time.NewTimer(pingAckDelay)
	tick.Stop()
	for {
		select {
		case <-c.kick:
		case <-done:
			return
		}
		tick.Reset(pingAckDelay)
		select {
		case <-tick.C:
		case <-done:
			tick.Stop()
			return
		}
		c.mu.Lock()
		ws := c.waiting
		c.waiting = c.spare[:0]
		c.mu.Unlock()
		for i, w := range ws {
			w.writeHeldAcks()
			ws[i] = nil
		}
		c.mu.Lock()
		c.spare = ws[:0]
		c.mu.Unlock()
	}
}

// pingLocked answers a PING: the ack is held for the proxy's ack clock,
// or written now (true: the caller flushes) when the connection already
// holds maxHeldAcks or has no clock.
func (w *h2writer) pingLocked(data [8]byte) (flush bool) {
	if w.clock == nil || len(w.heldAcks) >= maxHeldAcks {
		w.note(w.fr.WritePing(true, data))
		return true
	}
	w.heldAcks = append(w.heldAcks, data)
	if len(w.heldAcks) == 1 {
		w.clock.hold(w)
	}
	return false
}

// writeHeldAcks writes the acks w holds, and flushes.
func (w *h2writer) writeHeldAcks() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.heldAcks) == 0 || w.err != nil {
		w.heldAcks = w.heldAcks[:0]
		return
	}
	for _, d := range w.heldAcks {
		w.note(w.fr.WritePing(true, d))
	}
	w.heldAcks = w.heldAcks[:0]
	w.flushLocked()
}
