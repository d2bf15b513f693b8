//go:build tools

// Package kube records the kube-apiserver command as a dependency of this
// tools module, so go mod tidy keeps what building it needs.
package kube

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
