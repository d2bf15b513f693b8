package tcpproxy

import (
	"net"
	"sync/atomic"
	"time"
)

// The idle timeout is enforced by the connection's handler goroutine, which
// ticks ticksPerIdle times per IdleTimeout and looks for activity: a pair
// is idle when a tick has seen no activity for ticksPerIdle ticks in a row
// and for IdleTimeout by the clock. Counting ticks as well as time keeps
// the decision right when the process is starved of CPU: after a long
// pause the clock says "quiet for ages", but only one tick has passed and
// the bytes that arrived meanwhile are seen at the next one.
//
// Activity comes from one of two sources:
//
//   - The kernel (Linux, both sides TCP): each socket's TCP_INFO counters
//     of bytes received from its peer and bytes its peer acknowledged. They
//     move exactly when bytes move, including a slow reader draining the
//     send buffer after the copy is done, and stop when a peer stops
//     reading. The copies run plain io.Copy with no deadline at all.
//   - The copies themselves, elsewhere: each io.Copy waits for data under a
//     read deadline one tick away, so it returns and reports about once a
//     tick. A copy that has not come back for IdleTimeout is blocked
//     writing to a peer that does not read (or reads very slowly): stalled.
//     Bytes already handed to the kernel are not watched: a peer that takes
//     longer than IdleTimeout to drain them after its copy ended is cut.
//
// Closing happens between IdleTimeout and about 1.5×IdleTimeout after the
// last byte: activity is seen up to one tick late and the watch looks once
// a tick.
const ticksPerIdle = 4

// activityFunc returns a counter that grows whenever c's connection
// carries bytes in either direction, if the platform can tell: it is
// kernelActivity where hasKernelActivity(c), nil in tests of the copies'
// reports.
type activityFunc func(c net.Conn) (uint64, bool)

// activity is what one direction's copy reports, without kernel counters.
type activity struct {
	returns atomic.Uint64 // io.Copy calls that returned
	busy    atomic.Uint64 // of those, the ones that moved at least one byte
}

func (a *activity) report(n int64) {
	if n > 0 {
		a.busy.Add(1)
	}
	a.returns.Add(1)
}

// idleWatch is the handler's view of a pair's activity, updated each tick.
type idleWatch struct {
	idle       time.Duration
	counters   activityFunc
	kernel     bool      // activity from counters on both connections
	lastActive time.Time // when a tick last saw activity
	quietTicks int       // ticks since then
	// seen holds the counters as of the last tick: the kernel's per
	// connection in kernel mode, the copies' busy counts otherwise.
	seen [2]uint64
	dirs [2]dirWatch // stall detection, without kernel counters
}

type dirWatch struct {
	returns    uint64    // the copy's io.Copy returns as of the last tick
	lastReturn time.Time // when a tick last saw it change
	stuckTicks int       // ticks since then
}

// newIdleWatch starts watching a pair, with the kernel's counters if
// kernel is set (see kernelCounted) and the copies' reports otherwise.
//
// The kernel's counters start from zero at the first tick rather than
// being read now: reading them costs two system calls, and a connection's
// bytes before its first tick count as activity at that tick either way.
// Most connections end before their first tick.
func newIdleWatch(idle time.Duration, counters activityFunc, kernel bool, now time.Time) *idleWatch {
	w := &idleWatch{idle: idle, counters: counters, kernel: kernel, lastActive: now}
	for d := range w.dirs {
		w.dirs[d].lastReturn = now
	}
	return w
}

// kernelCounted reports whether the idle watch of a pair of client and
// upstream can use the kernel's counters.
func (p *Proxy) kernelCounted(client, upstream net.Conn) bool {
	return p.activity != nil && hasKernelActivity(client) && hasKernelActivity(upstream)
}

// tick looks for activity and returns why the pair must be closed, or "".
// finished marks the directions whose copy has ended.
func (w *idleWatch) tick(pr *pair, finished [2]bool, now time.Time) string {
	if w.active(pr, finished, now) {
		w.lastActive = now
		w.quietTicks = 0
	} else {
		w.quietTicks++
	}
	if !w.kernel {
		for d := range w.dirs {
			dw := &w.dirs[d]
			if dw.stuckTicks >= ticksPerIdle && now.Sub(dw.lastReturn) >= w.idle {
				return "stalled: no data accepted " + directionNames[d]
			}
		}
	}
	if w.quietTicks >= ticksPerIdle && now.Sub(w.lastActive) >= w.idle {
		return "idle: no byte either way"
	}
	return ""
}

// active reports whether the pair carried bytes since the last tick.
func (w *idleWatch) active(pr *pair, finished [2]bool, now time.Time) bool {
	moved := false
	if w.kernel {
		for i, c := range pr.conns {
			if n, ok := w.counters(c); ok && n != w.seen[i] {
				w.seen[i] = n
				moved = true
			}
		}
		return moved
	}
	for d := range w.dirs {
		if busy := pr.activity[d].busy.Load(); busy != w.seen[d] {
			w.seen[d] = busy
			moved = true
		}
		dw := &w.dirs[d]
		if returns := pr.activity[d].returns.Load(); returns != dw.returns || finished[d] {
			dw.returns = returns
			dw.lastReturn = now
			dw.stuckTicks = 0
		} else {
			dw.stuckTicks++
		}
	}
	return moved
}

var directionNames = [2]string{"from client to endpoint", "from endpoint to client"}
