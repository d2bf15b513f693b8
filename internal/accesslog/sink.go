package accesslog

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Paths with a meaning of their own.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

const (
	// DefaultBuffer is how many records a Sink holds while its writer is
	// behind: about a second of a busy listener's RPCs, a megabyte.
	DefaultBuffer = 4096
	// maxBatch bounds what the writer formats before one write.
	maxBatch = 64 << 10
	// closeGrace is how long Close waits for a write in progress before
	// cutting it (a pipe nobody reads blocks forever).
	closeGrace = 2 * time.Second
	// errorEvery spaces the records of repeated write failures.
	errorEvery = 10 * time.Second
	// gather is how long the writer lets records pile up after a write
	// before it looks again, unless the buffer is half full: under load it
	// wakes once per gather with a batch, not once per record, which is
	// what keeps the log's cost per RPC small. An idle sink's writer
	// sleeps until the next record.
	gather = 10 * time.Millisecond
)

// Options configure a Sink.
type Options struct {
	// Buffer is how many records the sink holds; 0 means DefaultBuffer.
	Buffer int
	// Logger receives write and reopen failures; nil discards them.
	Logger *slog.Logger
}

// Sink is one destination of access log records: a bounded buffer and the
// goroutine that writes it out.
type Sink struct {
	path string
	ch   chan Record
	log  *slog.Logger

	reopen chan struct{}
	kick   chan struct{} // the buffer is half full: write now
	kickAt int
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	// mu guards f: the writer swaps it on Reopen, Close may cut a write
	// blocked on it.
	mu    sync.Mutex
	f     *os.File
	owned bool // f is the sink's to close (not stdout or stderr)

	written      atomic.Uint64
	writeErrors  atomic.Uint64
	lastErrorLog time.Time // writer only
}

// Open opens path (Stdout, Stderr or a file, created if missing and
// appended to) and starts the sink's writer. A named pipe is opened for
// reading and writing, so that opening it never waits for a reader: until
// one comes, writes fill the pipe and then block the writer, and records
// are dropped instead.
func Open(path string, opts Options) (*Sink, error) {
	f, owned, err := openPath(path)
	if err != nil {
		return nil, err
	}
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Sink{
		path:   path,
		ch:     make(chan Record, opts.Buffer),
		log:    opts.Logger,
		reopen: make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
		kickAt: max(opts.Buffer/2, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
		f:      f,
		owned:  owned,
	}
	go s.run()
	return s, nil
}

func openPath(path string) (*os.File, bool, error) {
	switch path {
	case "":
		return nil, false, fmt.Errorf("access log: empty path")
	case Stdout:
		return os.Stdout, false, nil
	case Stderr:
		return os.Stderr, false, nil
	}
	flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		flags = os.O_RDWR
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("open access log: %w", err)
	}
	return f, true, nil
}

// Path is what the sink writes to, as given to Open.
func (s *Sink) Path() string { return s.path }

// Written is how many records the sink has written.
func (s *Sink) Written() uint64 { return s.written.Load() }

// Logger returns the handle a listener logs through: it stamps the
// listener's name and format on every record, and calls dropped (if not
// nil) for every record the full buffer refused.
func (s *Sink) Logger(listener string, format Format, dropped func()) *Logger {
	return &Logger{sink: s, listener: listener, format: format, dropped: dropped}
}

// Reopen makes the writer reopen the file at the sink's path (after
// logrotate renamed it, say): the records it has not written yet go to the
// new file. A no-op for stdout and stderr. It never blocks.
func (s *Sink) Reopen() {
	select {
	case s.reopen <- struct{}{}:
	default: // one is pending already
	}
}

// Close writes what the buffer holds, closes the file and stops the
// writer. A write blocked for longer than closeGrace is cut, and what was
// left is lost. Records logged after Close are never written.
func (s *Sink) Close() {
	s.once.Do(func() {
		close(s.stop)
		select {
		case <-s.done:
			return
		case <-time.After(closeGrace):
		}
		s.mu.Lock()
		// Pipes and terminals honour a deadline (a regular file's write
		// does not block); stdout is not ours to close.
		_ = s.f.SetWriteDeadline(time.Now())
		s.mu.Unlock()
	})
	<-s.done
}

// run is the writer goroutine.
func (s *Sink) run() {
	defer close(s.done)
	buf := make([]byte, 0, maxBatch+4096)
	pause := time.NewTimer(gather)
	defer pause.Stop()
	for {
		select {
		case r := <-s.ch:
			buf = s.batch(appendRecord(buf[:0], &r), 1)
			pause.Reset(gather)
			select {
			case <-pause.C:
			case <-s.kick:
			case <-s.reopen:
				s.reopenFile()
			case <-s.stop: // the loop sees it again
			}
		case <-s.reopen:
			s.reopenFile()
		case <-s.stop:
			for {
				select {
				case r := <-s.ch:
					buf = s.batch(appendRecord(buf[:0], &r), 1)
					continue
				default:
				}
				break
			}
			s.mu.Lock()
			if s.owned {
				_ = s.f.Close()
			}
			s.mu.Unlock()
			return
		}
	}
}

// batch adds the records waiting to buf, up to maxBatch bytes, and writes
// it; n records are in buf already.
func (s *Sink) batch(buf []byte, n int) []byte {
	for len(buf) < maxBatch {
		select {
		case r := <-s.ch:
			buf = appendRecord(buf, &r)
			n++
			continue
		default:
		}
		break
	}
	s.mu.Lock()
	f := s.f
	s.mu.Unlock()
	// Not under mu: a blocked write must leave Close free to cut it.
	if _, err := f.Write(buf); err != nil {
		s.writeErrors.Add(uint64(n))
		if now := time.Now(); now.Sub(s.lastErrorLog) >= errorEvery {
			s.lastErrorLog = now
			s.log.Error("access log write failed; records lost", "path", s.path, "records", n,
				"lost_so_far", s.writeErrors.Load(), "err", err)
		}
	} else {
		s.written.Add(uint64(n))
	}
	return buf
}

func (s *Sink) reopenFile() {
	if !s.owned {
		return
	}
	f, _, err := openPath(s.path)
	if err != nil {
		s.log.Error("access log reopen failed; still writing to the file open before", "path", s.path, "err", err)
		return
	}
	s.mu.Lock()
	old := s.f
	s.f = f
	s.mu.Unlock()
	_ = old.Close()
	s.log.Info("access log reopened", "path", s.path)
}

// Logger is one listener's handle on a Sink. Its methods are safe for
// concurrent use and never block.
type Logger struct {
	sink     *Sink
	listener string
	format   Format
	dropped  func()
}

// Sink is where the logger writes.
func (l *Logger) Sink() *Sink { return l.sink }

// Log queues r for writing, stamped with the logger's listener and format,
// or drops it when the buffer is full. r is copied; it is not retained.
func (l *Logger) Log(r *Record) {
	r.Listener, r.format = l.listener, l.format
	select {
	case l.sink.ch <- *r:
		if len(l.sink.ch) == l.sink.kickAt {
			select {
			case l.sink.kick <- struct{}{}:
			default:
			}
		}
	default:
		if l.dropped != nil {
			l.dropped()
		}
	}
}
