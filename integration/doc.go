// Package integration runs the real vigil binary against real gRPC backends
// on loopback: every test here builds on what a user would run.
package integration
