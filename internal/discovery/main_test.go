package discovery

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/kubetest"
)

func TestMain(m *testing.M) {
	kubetest.Main(m,
		// klog, linked in through client-go, flushes from a goroutine it
		// starts at init and never stops.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}
