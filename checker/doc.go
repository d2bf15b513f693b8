// Package checker health-checks endpoints the way the gRPC health protocol
// intends: grpc.health.v1.Health Check polling or a Watch subscription, or a
// plain TCP connect. One prober runs per endpoint; a Group owns the probers
// of one cluster, applies every result to the endpoint's health state machine
// (Status.Next) and reports each transition.
//
// A program can import checker to health-check its own backends; nothing in
// it depends on the rest of vigil.
package checker
