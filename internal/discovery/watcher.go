package discovery

import (
	"context"
	"fmt"
	"time"
)

// Handler receives a Watcher's events, one at a time, on the Watcher's
// goroutine. It should return quickly: the next lookup waits for it.
type Handler func(Event)

// Watcher runs one discovery source until Stop.
type Watcher struct {
	spec   Spec
	cancel context.CancelFunc
	done   chan struct{}
}

// Start begins discovering spec's endpoints and reports every outcome to
// handle. A source that cannot even be set up (no resolv.conf, an
// unreadable kubeconfig) reports Failed and retries at each refresh, so a
// fix on the machine is picked up without a reload.
func Start(spec Spec, handle Handler) *Watcher {
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{spec: spec, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		switch spec.Kind {
		case KindDNS, KindSRV:
			runDNS(ctx, spec, handle)
		case KindKubernetes:
			runKubernetes(ctx, spec, handle)
		default:
			handle(Event{Kind: Failed, First: true, Failures: 1, Err: fmt.Errorf("unknown discovery kind %q", spec.Kind)})
		}
	}()
	return w
}

// Spec is what the Watcher discovers.
func (w *Watcher) Spec() Spec { return w.spec }

// Stop ends the Watcher and waits for its goroutines: once it returns, the
// handler is not called again.
func (w *Watcher) Stop() {
	w.cancel()
	<-w.done
}

// runDNS resolves the spec every refresh (or TTL) until ctx ends.
func runDNS(ctx context.Context, spec Spec, handle Handler) {
	var tr tracker
	timer := time.NewTimer(0)
	defer timer.Stop()
	var src *dnsSource
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		var set []Endpoint
		var ttl time.Duration
		var err error
		if src == nil {
			src, err = newDNSSource(spec)
		}
		if src != nil {
			set, ttl, err = src.lookup(ctx)
		}
		if ctx.Err() != nil {
			return // a lookup cut short by Stop is no failure
		}
		for _, ev := range tr.observe(set, err) {
			handle(ev)
		}
		timer.Reset(nextRefresh(spec.Refresh, ttl))
	}
}
