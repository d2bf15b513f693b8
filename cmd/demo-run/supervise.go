package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is a process of the demo.
type proc struct {
	name  string
	path  string
	args  []string
	color string // ANSI color of the name prefix
	// ready waits until the process can take work; nil means at once.
	ready func(ctx context.Context) error
	// stopWait is how long the process gets after SIGTERM before SIGKILL.
	stopWait time.Duration
}

// output writes whole lines from several processes to one writer, each
// prefixed with the time since the start and the name of who said it.
type output struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	color bool
	width int // name column width
}

func (o *output) line(name, color string, text []byte) {
	o.mu.Lock()
	defer o.mu.Unlock()
	elapsed := time.Since(o.start).Seconds()
	if o.color && color != "" {
		fmt.Fprintf(o.w, "%6.1fs %s%-*s\x1b[0m | %s\n", elapsed, color, o.width, name, text)
	} else {
		fmt.Fprintf(o.w, "%6.1fs %-*s | %s\n", elapsed, o.width, name, text)
	}
}

// say prints a line of demo-run's own.
func (o *output) say(format string, args ...any) {
	o.line("demo-run", "\x1b[1m", fmt.Appendf(nil, format, args...))
}

// lineWriter splits what a process writes into lines for output.
type lineWriter struct {
	out         *output
	name, color string
	mu          sync.Mutex // exec copies stdout and stderr in two goroutines
	partial     []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.out.line(l.name, l.color, bytes.TrimRight(l.partial[:i], "\r"))
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) == 0 {
		l.partial = nil // let a long line's buffer go
	}
	return len(p), nil
}

// flush prints an unterminated last line.
func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.out.line(l.name, l.color, l.partial)
		l.partial = nil
	}
}

// running is a started process.
type running struct {
	proc
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its output is flushed
	err  error         // the process's exit error, set before done is closed
	// stopping is set when demo-run asked it to stop, so its exit is expected.
	stopping bool
}

// supervisor starts processes, notices when one exits, and stops them all
// in the reverse order of their start.
type supervisor struct {
	out     *output
	running []*running
	exited  chan *running // every exit, buffered for all processes
	waiters sync.WaitGroup
}

func newSupervisor(out *output, capacity int) *supervisor {
	return &supervisor{out: out, exited: make(chan *running, capacity)}
}

// start starts p in its own process group, so a Ctrl-C in the terminal
// reaches demo-run only and demo-run decides the order of the stops.
func (s *supervisor) start(p proc) (*running, error) {
	if len(s.running) == cap(s.exited) {
		return nil, fmt.Errorf("start %s: more processes than planned", p.name)
	}
	w := &lineWriter{out: s.out, name: p.name, color: p.color}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = w, w
	// Should a process leave a child holding its output open, do not wait
	// for that child forever.
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If demo-run dies without stopping its children, they stop too.
		// (Strictly, when the OS thread that started them exits; the Go
		// runtime keeps its threads for the life of the process.)
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	r := &running{proc: p, cmd: cmd, done: make(chan struct{})}
	s.running = append(s.running, r)
	s.waiters.Go(func() {
		r.err = cmd.Wait()
		w.flush()
		close(r.done)
		s.exited <- r
	})
	return r, nil
}

// waitReady waits for r's readiness check, failing early if r exits.
func (s *supervisor) waitReady(ctx context.Context, r *running, timeout time.Duration) error {
	if r.ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- r.ready(ctx) }()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("%s not ready after %v: %w", r.name, timeout, err)
		}
		return nil
	case <-r.done:
		cancel()
		<-ready
		return fmt.Errorf("%s exited while starting: %s", r.name, exitDescription(r.err))
	}
}

// stopAll stops every process still running, last started first: SIGTERM,
// then SIGKILL to its process group after its stopWait.
func (s *supervisor) stopAll() {
	for i := len(s.running) - 1; i >= 0; i-- {
		r := s.running[i]
		select {
		case <-r.done:
			continue
		default:
		}
		r.stopping = true
		_ = r.cmd.Process.Signal(syscall.SIGTERM) // it may just have exited
		timer := time.NewTimer(r.stopWait)
		select {
		case <-r.done:
		case <-timer.C:
			s.out.say("%s did not stop within %v: killing it", r.name, r.stopWait)
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
		timer.Stop()
	}
	s.waiters.Wait()
}

func exitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// waitDial waits until addr accepts TCP connections.
func waitDial(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return poll(ctx, func() error { return dial(ctx, addr) })
	}
}

func dial(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

// waitVigil waits until vigil's grpc listener accepts connections and, if
// vigil's admin server answers, until GET /ready is 200. An admin address
// that refuses connections counts as ready: the admin server may be disabled.
func waitVigil(grpcListener, admin string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return poll(ctx, func() error {
			if err := dial(ctx, grpcListener); err != nil {
				return err
			}
			if admin == "" {
				return nil
			}
			url := "http://" + admin + "/ready"
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if errors.Is(err, syscall.ECONNREFUSED) {
				return nil
			}
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			return nil
		})
	}
}

// poll calls try every 100ms until it succeeds or ctx ends, returning the
// last error.
func poll(ctx context.Context, try func() error) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		err := try()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last try: %w)", ctx.Err(), err)
		case <-ticker.C:
		}
	}
}

// isTerminal reports whether w is a terminal, for colors.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
