// Package deploy holds vigil's Kubernetes manifests (kubernetes.yaml: a
// ServiceAccount, RBAC to read EndpointSlices, the ConfigMap with vigil's
// configuration, a Deployment with gRPC probes at vigil's own health, and a
// Service), embedded so that tests check them: parsed strictly by
// client-go's scheme, the configuration validated by vigil's own parser,
// and everything applied to a real API server.
package deploy

import _ "embed"

// Kubernetes is kubernetes.yaml.
//
//go:embed kubernetes.yaml
var Kubernetes []byte
