package policies_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
	_ "github.com/vigil-proxy/vigil/balancer/policies"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistersEveryShippedPolicy(t *testing.T) {
	for _, name := range []string{"round_robin", "least_request", "random", "ring_hash", "maglev", "weighted_round_robin"} {
		if _, ok := balancer.PolicyByName(name); !ok {
			t.Errorf("policy %q not registered by importing policies", name)
		}
	}
}
