// Package kubetest runs a real Kubernetes API server for tests: etcd and
// kube-apiserver, built from the Go module proxy by .ci/install-kube
// (versions pinned in integration/tools/{etcd,kube}/go.mod, binaries cached
// under $HOME/.cache/vigil), started on 127.0.0.1 with RBAC, static tokens
// and a service-account signing key.
//
// No controller-manager runs, so tests write EndpointSlices themselves. The
// API server refuses EndpointSlice addresses in 127.0.0.0/8, so a test
// binary that uses this package re-executes itself (Main) in a network and
// mount namespace of its own: there 198.18.0.0/15 (RFC 2544's benchmarking
// range) and 2001:db8::/64 are local addresses on the namespace's loopback
// interface, backends listen on them, and no packet can leave the
// namespace. A private tmpfs on /run holds the service-account files that
// client-go's in-cluster configuration reads.
//
// The tests run only when EnvRequire is 1 (make test-kube sets it), and
// then fail rather than skip when something is missing: the API server
// takes seconds to start and hundreds of MB, too heavy for make test.
//
// Goroutines: each process started (etcd, kube-apiserver) has one goroutine
// waiting for it; Stop ends the process and that goroutine.
package kubetest
