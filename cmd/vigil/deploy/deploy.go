// Package deploy holds vigil's Kubernetes manifests (kubernetes.yaml: a
// ServiceAccount, RBAC to read EndpointSlices, the ConfigMap with vigil's
// configuration, a Deployment with gRPC probes at vigil's own health, and a
// Service), embedded so that tests check them: parsed strictly by
// client-go's scheme, the configuration validated by vigil's own parser,
// applied to a real API server, and run by the real vigil.
package deploy

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

// Kubernetes is kubernetes.yaml.
//
//go:embed kubernetes.yaml
var Kubernetes []byte

// Objects decodes every document of kubernetes.yaml with client-go's
// scheme, strictly: an unknown or misspelt field is an error.
func Objects() ([]runtime.Object, error) {
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(Kubernetes)))
	var objs []runtime.Object
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes.yaml: %w", err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("kubernetes.yaml, document %d: %w", len(objs)+1, err)
		}
		objs = append(objs, obj)
	}
}
