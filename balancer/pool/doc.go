// Package pool owns one cluster: its endpoints, the one authoritative copy
// of each endpoint's health, the checker.Group that probes them and the
// balancer.Cluster whose picker the data paths read. A program that imports
// pool and checker gets a health-checked, balanced pool of backends:
//
//	p := pool.New("orders", pool.Options{Sinks: []event.Sink{pool.LogSink(slog.Default())}})
//	defer p.Close()
//	p.Apply(pool.Spec{
//		HealthCheck: checker.DefaultConfig(),
//		Endpoints:   []pool.Endpoint{{Address: "10.0.0.7:50051"}, {Address: "10.0.0.8:50051"}},
//	})
//	<-p.Ready()
//	ep := p.Cluster().Pick() // per connection or RPC: no lock, no allocation
//
// # What it owns
//
// Membership: a Spec lists endpoints (source "config"); SetDiscovered
// gives the endpoints one discovery source found. The pool's endpoints are
// the union (an address listed and discovered counts once, with the
// listed weight). Apply and SetDiscovered compare what they are given with
// what runs and apply the difference as one Plan, which they return: new
// endpoints start pending and are probed, endpoints no longer wanted stop
// being probed at once, take no new traffic and drain, changed weights and
// settings take effect, and nothing else is touched (an endpoint in both
// the old and the new set keeps its health and its connections).
//
// Health: every change the checker reports (checker.Change) is applied to
// the endpoint's status here, under the pool's lock, with everything that
// derives from it in the same critical section: the cluster's counts,
// panic mode, whether the cluster can serve, and whether the endpoint may
// be picked (balancer.Endpoint.SetExcluded, which every picker honours at
// once). Whether an endpoint may be picked is a function of its health
// alone, recomputed by the one function that changes it; a picker rebuilt
// later only changes how traffic is spread, never whom it may reach.
//
// Outlier detection (Spec.Outlier, outlier.go): the data paths report
// every RPC's or connection's outcome to its balancer.Endpoint (atomics,
// no lock, no allocation); a run of consecutive failures signals the pool,
// which ejects the endpoint at once. An ejection is one more input of
// whether an endpoint may be picked, applied like a health change (the
// same critical section, counts, exclusion and events): it is reported as
// EndpointEvicted with Outlier set and its end as EndpointReadmitted, if
// the active check says healthy. The arithmetic is package outlier's pure
// functions of the time.
//
// Slow start (Spec.SlowStart, slowstart.go): an endpoint admitted or
// readmitted ramps from a share of its weight to all of it over a window.
// Picks read integer weights fixed at build, so the ramp is a series of
// builds at a bounded rate (every window/10, at least 100ms apart), made
// only while some endpoint ramps; the weights are read on the pool's clock
// (p.now, injectable for tests). A ramp changes how traffic is spread,
// never whom it may reach. The arithmetic is package slowstart's.
//
// Events: each change is reported as typed events (package event) to the
// sinks, in order: the eviction log (LogSink), and in vigil the state
// store, the metrics and the proxy's own health service. Every transition
// is an event; nothing is rate-limited. An event is in force when a sink
// gets it: the events of a change that made an endpoint routable while
// the picker in force lacks it wait for the builder's next build (a few
// milliseconds), so that an "endpoint admitted" record or a "healthy" in
// the store always means the endpoint can be picked.
//
// # Goroutines
//
// A pool runs one builder goroutine, which rebuilds the picker when health
// changes (a burst of changes, such as 10,000 endpoints admitted at
// start-up, costs one build rather than one each), and one goroutine per
// draining endpoint, which waits for its in-flight work to end, and one
// outlier goroutine (outliers), which ejects tripped endpoints, ends
// ejections when their time is over and reviews each interval; it sleeps
// while outlier detection is off. One ramp goroutine (ramps) rebuilds the
// picker while an endpoint ramps under slow start, and sleeps otherwise. Its
// checker.Group runs one prober per endpoint. Close stops them all and
// waits for them.
//
// # Locks
//
// applyMu serializes Apply, SetDiscovered and Close. mu guards the
// endpoints and everything derived from them, and is held while sinks
// run. The checker's control methods (Add, Remove, Reconfigure, Close) are
// called with applyMu held and mu not held: a prober reporting a change
// takes mu, and those methods wait for probers. Lock order: applyMu, mu.
package pool
