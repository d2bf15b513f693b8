package gcfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		live, want uint64
		base       int
	}{
		{"small heap: goal raised to the floor", 4 * mib, 700, 100},
		{"tiny heap: bounded", 1024, maxPercent, 100},
		{"half the floor: the base", 16 * mib, 100, 100},
		{"large heap: the base", 300 * mib, 100, 100},
		{"never below the base", 12 * mib, 200, 200},
		{"rounded to two digits", 5*mib + 1024, 530, 100},
		{"nothing live yet", 0, 100, 100},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.live, 32*mib, tc.base); got != int(tc.want) {
				t.Errorf("Percent(%d MiB) = %d, want %d", tc.live/mib, got, tc.want)
			}
			// The goal it gives is at least (about) the floor.
			if p := Percent(tc.live, 32*mib, tc.base); tc.live > 0 && p < maxPercent && tc.live < 16*mib {
				if goal := tc.live * uint64(100+p) / 100; goal < 28*mib {
					t.Errorf("goal %d MiB, want about the 32 MiB floor", goal/mib)
				}
			}
		})
	}
}

// TestRun checks that Run raises GOGC for this test binary's small heap and
// puts it back when it returns.
func TestRun(t *testing.T) {
	t.Setenv("GOGC", "") // Run leaves a GOGC from the environment alone
	runtime.GC()
	before := debug.SetGCPercent(100)
	debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, 1<<30) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := debug.SetGCPercent(-1)
		debug.SetGCPercent(p)
		if p > before {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("GOGC still %d after Run started", p)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if p := debug.SetGCPercent(before); p != before {
		t.Errorf("GOGC %d after Run returned, want %d back", p, before)
	}
}
