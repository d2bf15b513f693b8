package checker

import (
	"sync"
	"time"

	"google.golang.org/grpc/connectivity"
)

// drainScanPeriod is how often a group looks for Watch streams whose
// connection left READY.
const drainScanPeriod = time.Second

// drainWatch moves Watch streams off connections that are going away. A
// graceful GOAWAY leaves an open stream running on the old connection, and
// the backend's GracefulStop waiting for it; the stream must be re-opened
// elsewhere. With liveness: check the stream's own liveness timer notices;
// with keepalive a stream has no timer once its first status arrived, and
// one scan per group every drainScanPeriod (a few nanoseconds per stream)
// replaces 10,000 timers firing every interval. A backend's graceful stop
// thus waits at most about a second for vigil.
type drainWatch struct {
	mu      sync.Mutex
	streams map[*liveness]struct{}
	closed  bool
	stop    chan struct{}
	done    sync.WaitGroup
}

// add watches l's connection, starting the scan with the first stream.
func (w *drainWatch) add(l *liveness) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return // the group is closing: its probers are being stopped
	}
	if w.streams == nil {
		w.streams = make(map[*liveness]struct{})
		w.stop = make(chan struct{})
		w.done.Go(w.run)
	}
	w.streams[l] = struct{}{}
}

// remove stops watching l; no scan touches l after it returns.
func (w *drainWatch) remove(l *liveness) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.streams, l)
}

// close stops the scan and waits for it.
func (w *drainWatch) close() {
	w.mu.Lock()
	w.closed = true
	stop := w.stop
	w.mu.Unlock()
	if stop != nil {
		close(stop)
		w.done.Wait()
	}
}

func (w *drainWatch) run() {
	t := time.NewTicker(drainScanPeriod)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		w.scan()
	}
}

// scan ends the streams whose connection left READY; their probers
// re-open them on a new connection.
func (w *drainWatch) scan() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for l := range w.streams {
		if l.conn.GetState() != connectivity.Ready {
			l.connLeft = true
			l.cancel()
			delete(w.streams, l)
		}
	}
}
