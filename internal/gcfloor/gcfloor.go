// Package gcfloor keeps the garbage collector's heap goal from falling
// below a floor while the live heap is small.
//
// A proxy's live heap is small (a few MiB of connection and stream state)
// while it allocates steadily per request, so with GOGC's default the
// collector runs several times a second, and each cycle costs the data
// path more than its size suggests: mark workers on every P, assists,
// write barriers, and the wake-ups that come with them. Measured on vigil's
// grpc listener at the peer benchmark's load, GOGC=400 took 10% off the
// CPU per RPC. Raising GOGC itself would multiply a large live heap too
// (10,000 health-checked endpoints hold hundreds of MiB); a floor costs
// memory only where the heap is small anyway.
//
// Run adjusts GOGC from the live heap the last collection found: the goal
// is at least Floor bytes, and GOGC never falls below what the process
// started with. A GOGC set in the environment is the operator's choice and
// is left alone.
package gcfloor

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Defaults for Run.
const (
	// Floor is the least heap goal: at the peer benchmark's load (about
	// 20,000 RPCs/s, 1 KiB allocated each) a collection every 1.5 s
	// instead of several per second.
	Floor = 32 << 20
	// interval is how often the live heap is looked at; a collection
	// changes it at most by what the goal allowed.
	interval = time.Second
	// maxPercent bounds the GOGC set, against a nearly empty heap.
	maxPercent = 10000
)

// Run keeps the heap goal at or above floor bytes until ctx is done, then
// puts back the GOGC it found. It returns at once when GOGC is set in the
// environment.
func Run(ctx context.Context, floor uint64) {
	if os.Getenv("GOGC") != "" {
		return
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return // collection is off
	}
	defer debug.SetGCPercent(base)
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	current := base
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := Percent(sample[0].Value.Uint64(), floor, base); p != current {
				debug.SetGCPercent(p)
				current = p
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// Percent is the GOGC that makes the heap goal of a live heap of live
// bytes at least floor, and never less than base. It is rounded down to
// two significant digits, so that a live heap that moves a little does not
// change it.
func Percent(live, floor uint64, base int) int {
	if live == 0 || live >= floor/2 {
		return base
	}
	p := (floor - live) * 100 / live
	scale := uint64(1)
	for p/scale >= 100 {
		scale *= 10
	}
	p = p / scale * scale
	return max(base, min(int(p), maxPercent))
}
