package balancer_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer"
	_ "github.com/vigil-proxy/vigil/balancer/policies"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEndpoint(t *testing.T) {
	e := balancer.NewEndpoint("127.0.0.1:50051")
	if got := e.Address(); got != "127.0.0.1:50051" {
		t.Errorf("Address() = %q", got)
	}
	select {
	case <-e.Closed():
		t.Fatal("Closed() is closed before Close")
	default:
	}
	e.Close()
	e.Close() // idempotent
	select {
	case <-e.Closed():
	default:
		t.Fatal("Closed() is not closed after Close")
	}
}

func TestEndpointInflightConcurrent(t *testing.T) {
	e := balancer.NewEndpoint("a")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10_000 {
				e.Acquire()
				if e.Inflight() < 1 {
					t.Error("Inflight() < 1 while this goroutine holds one")
					return
				}
				e.Release()
			}
		})
	}
	wg.Wait()
	if n := e.Inflight(); n != 0 {
		t.Fatalf("Inflight() = %d after every Acquire was released", n)
	}
}

func TestShippedPoliciesRegistered(t *testing.T) {
	want := []string{"least_request", "maglev", "random", "ring_hash", "round_robin"}
	got := balancer.Policies()
	for _, name := range want {
		if !slices.Contains(got, name) {
			t.Errorf("Policies() = %v, missing %q", got, name)
		}
		p, ok := balancer.PolicyByName(name)
		if !ok || p.Name() != name {
			t.Errorf("PolicyByName(%q) = %v, %v", name, p, ok)
		}
	}
	if !slices.IsSorted(got) {
		t.Errorf("Policies() = %v, not sorted", got)
	}
	if p, ok := balancer.PolicyByName("weighted_magic"); ok {
		t.Errorf("PolicyByName(unknown) = %v, true", p)
	}
}

type fixedPolicy struct{ name string }

func (p fixedPolicy) Name() string { return p.name }
func (fixedPolicy) Build(eps []balancer.Weighted) balancer.Picker {
	return fixedPicker{eps[0].Endpoint}
}

type fixedPicker struct{ e *balancer.Endpoint }

func (p fixedPicker) Pick() *balancer.Endpoint { return p.e }

// registerRuns makes the policy name of each run of
// TestRegisterTwicePanics new: the registry is process-wide (-count=N).
var registerRuns atomic.Int64

func TestRegisterTwicePanics(t *testing.T) {
	name := fmt.Sprintf("test_register_twice_%d", registerRuns.Add(1))
	balancer.Register(fixedPolicy{name})
	defer func() {
		if recover() == nil {
			t.Fatal("second Register of the same name did not panic")
		}
	}()
	balancer.Register(fixedPolicy{name})
}
