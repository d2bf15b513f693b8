// Package checker health-checks endpoints the way the gRPC health protocol
// intends: grpc.health.v1.Health Check polling or a Watch subscription, or a
// plain TCP connect. One prober runs per endpoint; a Group owns the probers
// of one cluster, applies every result to the endpoint's health state machine
// (Status.Next) and reports each transition.
//
// A program can import checker to health-check its own backends; nothing in
// it depends on the rest of vigil:
//
//	g := checker.NewGroup(checker.Config{Mode: checker.ModeCheck}, checker.GroupOptions{
//		Cluster:  "orders",
//		OnChange: func(c checker.Change) { /* rebuild a picker */ },
//	})
//	defer g.Close()
//	g.Add("10.0.0.7:50051", checker.Status{Health: checker.Pending})
//
// One probe is a plain function (CheckOnce, TCPOnce) that a program can
// also call on its own.
//
// # Semantics
//
// A new endpoint is Pending and is admitted by its first success. An
// answer that is not SERVING (NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, or a
// non-OK gRPC status the backend returned, such as NOT_FOUND) evicts at
// once; transport trouble (timeouts, refused or reset connections) evicts
// after Thresholds.Unhealthy failures in a row. An evicted endpoint is
// readmitted after Thresholds.Healthy successes in a row, or at once by a
// SERVING pushed on a Watch stream. See CheckOnce for the exact
// classification.
//
// # Watch mode
//
// Mode watch keeps one Watch stream per endpoint; every pushed status takes
// effect at once. Broken streams are re-opened with backoff, each failed
// attempt counting as a failure; Watch UNIMPLEMENTED falls back to Check
// polling; a liveness Check every interval on the stream's connection
// evicts a blackholed endpoint within interval + timeout. The details are
// in watch.go.
//
// # Eviction log
//
// Transitions are logged with log/slog: "endpoint admitted" (INFO: cluster,
// endpoint, check), "endpoint evicted" (WARN: cluster, endpoint, check,
// reason, failures, healthy, total, and hint where the cause is usually a
// mistake on the backend) and "endpoint readmitted" (INFO: cluster,
// endpoint, check, healthy, total). check is the mode in use: "check" for
// a Watch endpoint that fell back to Check.
//
// A flapping endpoint cannot flood the log. Its transition records draw
// from a token bucket of 5 that refills at one record per 5 s. A
// transition that finds the bucket empty is still applied and reported to
// OnChange and OnProbe, but not logged. 5 s after the first such
// suppressed transition, one WARN record "endpoint flapping" (keys cluster,
// endpoint, check, suppressed, evictions, readmissions, over, health,
// healthy, total) summarises what was suppressed since; a pending summary
// is logged at once on Remove and Close. A continuous flap thus logs about
// one transition and one summary every 5 s per endpoint.
//
// Two warnings are logged once per endpoint: "endpoint has no health
// service, serving it anyway" (on_unimplemented: serve) and "endpoint does
// not implement Watch, polling with Check".
//
// # Connections
//
// Each endpoint has one HTTP/2 connection for all its probes
// (checker/internal/probeconn: one goroutine per connection, a 2 KiB read
// buffer, the minimum flow-control window) and no HTTP/2 keepalive pings
// (a default grpc-go server answers pings more frequent than every 5
// minutes with GOAWAY too_many_pings).
// After a transport failure the connection is replaced at the next probe,
// so every probe of a troubled endpoint is a real connection attempt and a
// recovered backend is seen at once.
package checker
