//go:build tools

// Package etcd records the etcd server command as a dependency of this
// tools module, so go mod tidy keeps what building it needs.
package etcd

import _ "go.etcd.io/etcd/server/v3"
