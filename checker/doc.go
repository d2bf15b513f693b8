// Package checker health-checks endpoints the way the gRPC health protocol
// intends: grpc.health.v1.Health Check polling or a Watch subscription, or a
// plain TCP connect. One prober runs per endpoint; a Group owns the probers
// of one cluster, applies every result to the endpoint's health state machine
// (Status.Next) and reports each transition.
//
// A program can import checker to health-check its own backends; nothing in
// it depends on the rest of vigil (balancer/pool builds a balanced pool on
// it):
//
//	g := checker.NewGroup(checker.DefaultConfig(), checker.GroupOptions{
//		Cluster:  "orders",
//		OnChange: func(c checker.Change) { /* c.Transition: admitted, evicted, readmitted */ },
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
// # Load reports
//
// With SetLoadReports, every endpoint also keeps one ORCA
// OpenRcaService/StreamCoreMetrics stream (gRFC A51) on its probe
// connection, and each report goes to GroupOptions.OnLoadReport. Reports
// never change health: a broken stream is re-opened with backoff and
// counts no failure; a backend without the service is logged once
// ("endpoint does not serve ORCA load reports, weighing it by the mean")
// and not asked again on the same connection. The details are in
// loadreport.go.
//
// # Changes
//
// Every change of an endpoint's Status is reported to OnChange, in order,
// with the transition it makes (admitted, evicted, readmitted, or none when
// only its counters or reason changed), the mode in use, the probe result
// and its error, and a one-line Hint when the cause is usually a mistake
// on the backend. The group writes no eviction log itself and drops
// nothing: the eviction log is written from these changes by whoever owns
// the cluster (balancer/pool's LogSink in vigil).
//
// A failed gRPC probe's Result.Err is a *ProbeError: its Kind says what
// went wrong (the backend answered with a non-OK status; the connection
// was refused, broke, was drained; no gRPC server answered; the deadline
// passed), read with errors.As, never from its message.
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
