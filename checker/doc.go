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
// # Eviction log
//
// Transitions are logged with log/slog: "endpoint admitted" (INFO: cluster,
// endpoint, check), "endpoint evicted" (WARN: cluster, endpoint, check,
// reason, failures, healthy, total, and hint where the cause is usually a
// mistake on the backend) and "endpoint readmitted" (INFO: cluster,
// endpoint, check, healthy, total). Records of a flapping endpoint are
// rate-limited and summarised (see flapPolicy in eventlog.go).
//
// # Connections
//
// Each endpoint has one gRPC connection for all its probes, with small
// buffers and no HTTP/2 keepalive pings (a default grpc-go server answers
// pings more frequent than every 5 minutes with GOAWAY too_many_pings).
// After a transport failure the connection is replaced at the next probe,
// so every probe of a troubled endpoint is a real connection attempt and a
// recovered backend is seen at once.
package checker
