package filewatch

import (
	"path/filepath"
	"testing"
	"time"
)

// A steady stream of writes, each closer to the last than the debounce,
// must not postpone the reload for as long as it lasts: a change is
// reported at most ten debounces after the first write of a burst. Found
// by the integration chaos suite's reload storm (200 writes a second for
// 3s brought no reload at all).
func TestSteadyWritesDoNotStarveReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	write(t, path, "0")
	changes := watch(t, path) // debounce 20ms: a change within 200ms
	// Write every 5ms, never pausing, until two changes are reported.
	// Without the bound of ten debounces no change comes while the writes
	// last; with it one comes about every 200ms. The deadline is wide so
	// that a loaded machine (CI, other suites) cannot fail it by slowness.
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	seen := 0
	for i := 0; seen < 2; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("%d changes reported during %v of writes every 5ms; want one every 200ms or so", seen, time.Since(start).Round(time.Millisecond))
		}
		write(t, path, string(rune('a'+i%26)))
		time.Sleep(5 * time.Millisecond)
		select {
		case <-changes:
			seen++
		default:
		}
	}
	t.Logf("2 changes reported %v into a steady stream of writes every 5ms", time.Since(start).Round(time.Millisecond))
}
