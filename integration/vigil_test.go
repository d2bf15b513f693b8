package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// record is one JSON log record of vigil.
type record map[string]any

func (r record) msg() string { s, _ := r["msg"].(string); return s }

func (r record) str(key string) string {
	switch v := r[key].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (r record) num(key string) int {
	f, _ := r[key].(float64)
	return int(f)
}

func (r record) String() string {
	b, _ := json.Marshal(map[string]any(r))
	return string(b)
}

// match is a predicate over log records: msg plus key=value pairs.
func match(msg string, kv ...string) func(record) bool {
	return func(r record) bool {
		if r.msg() != msg {
			return false
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if r.str(kv[i]) != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// logStream collects vigil's log records as they are written.
type logStream struct {
	mu      sync.Mutex
	records []record
	raw     []string // lines that are not JSON: panics, race reports
	changed chan struct{}
}

func newLogStream() *logStream { return &logStream{changed: make(chan struct{})} }

func (l *logStream) consume(r io.Reader, tee io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if tee != nil {
			fmt.Fprintf(tee, "%s\n", line)
		}
		var rec record
		l.mu.Lock()
		if json.Unmarshal(line, &rec) == nil {
			l.records = append(l.records, rec)
		} else {
			l.raw = append(l.raw, string(line))
		}
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
}

// find returns the records from index from on that satisfy pred.
func (l *logStream) find(from int, pred func(record) bool) []record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []record
	for _, r := range l.records[min(from, len(l.records)):] {
		if pred(r) {
			out = append(out, r)
		}
	}
	return out
}

func (l *logStream) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

func (l *logStream) rawText() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.raw, "\n")
}

// wait blocks until a record at index from or later satisfies pred, and
// returns it with its index.
func (l *logStream) wait(t testing.TB, timeout time.Duration, from int, pred func(record) bool, what string) (record, int) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		for i := min(from, len(l.records)); i < len(l.records); i++ {
			if pred(l.records[i]) {
				r := l.records[i]
				l.mu.Unlock()
				return r, i
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no log record %s within %v; log:\n%s", what, timeout, l.dump())
		}
	}
}

func (l *logStream) dump() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	start := max(0, len(l.records)-80)
	for _, r := range l.records[start:] {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	for _, r := range l.raw {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	return b.String()
}

// vigilProc is a running vigil binary.
type vigilProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	cfgPath string
	logs    *logStream
	done    chan struct{}
	exit    error
}

// startVigil writes cfg to a file and runs `vigil run --config FILE`, with
// JSON logs. It waits until every listener is listening.
func startVigil(t testing.TB, cfg string) *vigilProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return startVigilFile(t, path)
}

func startVigilFile(t testing.TB, path string) *vigilProc {
	t.Helper()
	return startVigilEnv(t, path)
}

// startVigilEnv runs vigil on the configuration file at path, with env
// added to its environment, and waits until it runs; the test fails if it
// exits or cannot start first.
func startVigilEnv(t testing.TB, path string, env ...string) *vigilProc {
	t.Helper()
	v := &vigilProc{t: t, cfgPath: path, logs: newLogStream(), done: make(chan struct{})}
	v.cmd = exec.Command(bin("vigil"), "run", "--config", path)
	v.cmd.Env = append(os.Environ(), env...)
	stderr, err := v.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	v.cmd.Stdout = io.Discard
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var tee io.Writer
	if os.Getenv("VIGIL_TEST_LOG") != "" {
		tee = os.Stderr
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		v.logs.consume(stderr, tee)
	}()
	go func() {
		<-consumed
		v.exit = v.cmd.Wait()
		close(v.done)
	}()
	t.Cleanup(func() {
		v.kill()
		if raw := v.logs.rawText(); strings.Contains(raw, "DATA RACE") || strings.Contains(raw, "panic:") {
			t.Errorf("vigil reported a problem:\n%s", raw)
		}
		if t.Failed() {
			// What vigil said about health and configuration, to read the
			// failure by.
			for _, r := range v.logs.find(0, func(r record) bool {
				m := r.msg()
				return strings.HasPrefix(m, "endpoint ") || strings.HasPrefix(m, "cluster ") || strings.HasPrefix(m, "config ")
			}) {
				t.Logf("vigil: %v", r)
			}
		}
	})
	// Wait for it to run, or to exit (a configuration it rejects).
	deadline := time.Now().Add(30 * time.Second)
	for len(v.logs.find(0, func(r record) bool { return r.msg() == "vigil running" || r.msg() == "cannot start" })) == 0 {
		select {
		case <-v.done:
			t.Fatalf("vigil exited at start (%v); output:\n%s", v.exit, v.logs.dump())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("vigil not running within 30s; log:\n%s", v.logs.dump())
		}
	}
	if rs := v.logs.find(0, match("cannot start")); len(rs) > 0 {
		t.Fatalf("vigil could not start: %v", rs[0])
	}
	return v
}

// listener returns the bound address of a listener.
func (v *vigilProc) listener(name string) string {
	v.t.Helper()
	rs := v.logs.find(0, match("listening", "listener", name))
	if len(rs) == 0 {
		v.t.Fatalf("listener %s is not listening; log:\n%s", name, v.logs.dump())
	}
	return rs[len(rs)-1].str("address")
}

// adminAddr returns the bound address of the admin server.
func (v *vigilProc) adminAddr() string {
	v.t.Helper()
	r, _ := v.logs.wait(v.t, 10*time.Second, 0, match("admin listening"), "admin listening")
	return r.str("address")
}

// wait waits for a log record from index from on.
func (v *vigilProc) wait(timeout time.Duration, from int, pred func(record) bool, what string) (record, int) {
	v.t.Helper()
	return v.logs.wait(v.t, timeout, from, pred, what)
}

// mark is the index of the next log record, for waiting on what happens
// after now.
func (v *vigilProc) mark() int { return v.logs.len() }

func (v *vigilProc) signal(sig syscall.Signal) {
	v.t.Helper()
	if err := v.cmd.Process.Signal(sig); err != nil {
		v.t.Fatalf("signal vigil: %v", err)
	}
}

// stop sends SIGTERM and returns vigil's exit error once it has exited.
func (v *vigilProc) stop(timeout time.Duration) error {
	v.t.Helper()
	v.signal(syscall.SIGTERM)
	return v.exited(timeout)
}

// exited waits for vigil to exit and returns its exit error.
func (v *vigilProc) exited(timeout time.Duration) error {
	v.t.Helper()
	select {
	case <-v.done:
		return v.exit
	case <-time.After(timeout):
		v.kill()
		v.t.Fatalf("vigil did not exit within %v; log:\n%s", timeout, v.logs.dump())
		return nil
	}
}

func (v *vigilProc) kill() {
	select {
	case <-v.done:
	default:
		_ = v.cmd.Process.Kill()
		<-v.done
	}
}

// rewrite replaces the config file's content in place.
func (v *vigilProc) rewrite(cfg string) {
	v.t.Helper()
	tmp := v.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(cfg), 0o644); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(tmp, v.cfgPath); err != nil {
		v.t.Fatal(err)
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// yamlConfig renders a vigil configuration for tests; every listener and
// the admin server take a free port.
type yamlConfig struct {
	Admin                       bool
	DrainDelay, ShutdownTimeout string
	Listeners                   []yamlListener
	Clusters                    []yamlCluster
}

type yamlListener struct {
	Name, Protocol, Cluster, Address string
	Extra                            string // more YAML lines for the listener, indented by the caller
}

type yamlCluster struct {
	Name, Policy string
	Panic        int
	Endpoints    []string
	Weights      []int
	Health       string // the health_check block's lines, without indentation
	Discovery    string // the discovery block's lines, without indentation; "" for none
	Extra        string // more YAML lines for the cluster (sections such as slow_start), indented by the caller
}

func (c yamlConfig) String() string {
	var b bytes.Buffer
	if c.Admin {
		b.WriteString("admin:\n  address: 127.0.0.1:0\n")
	} else {
		b.WriteString("admin:\n  address: \"\"\n")
	}
	b.WriteString("log:\n  format: json\n  level: debug\n")
	b.WriteString("shutdown:\n")
	fmt.Fprintf(&b, "  drain_delay: %s\n", or(c.DrainDelay, "0s"))
	fmt.Fprintf(&b, "  timeout: %s\n", or(c.ShutdownTimeout, "5s"))
	b.WriteString("listeners:\n")
	for _, l := range c.Listeners {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    protocol: %s\n",
			l.Name, or(l.Address, "127.0.0.1:0"), or(l.Protocol, "grpc"))
		if l.Cluster != "" { // none: a listener with routes only
			fmt.Fprintf(&b, "    cluster: %s\n", l.Cluster)
		}
		if l.Extra != "" {
			for _, line := range strings.Split(strings.TrimSpace(l.Extra), "\n") {
				fmt.Fprintf(&b, "    %s\n", strings.TrimSpace(line))
			}
		}
	}
	if len(c.Listeners) == 0 {
		b.WriteString("  []\n")
	}
	b.WriteString("clusters:\n")
	for _, cl := range c.Clusters {
		fmt.Fprintf(&b, "  - name: %s\n    lb_policy: %s\n    panic_threshold: %d\n    endpoints:\n",
			cl.Name, or(cl.Policy, "round_robin"), cl.Panic)
		for i, e := range cl.Endpoints {
			w := 1
			if i < len(cl.Weights) {
				w = cl.Weights[i]
			}
			fmt.Fprintf(&b, "      - address: %s\n        weight: %d\n", e, w)
		}
		if cl.Discovery != "" {
			b.WriteString("    discovery:\n")
			for _, line := range strings.Split(strings.TrimSpace(cl.Discovery), "\n") {
				fmt.Fprintf(&b, "      %s\n", strings.TrimRight(line, " "))
			}
		}
		if cl.Extra != "" {
			for _, line := range strings.Split(strings.Trim(cl.Extra, "\n"), "\n") {
				fmt.Fprintf(&b, "    %s\n", strings.TrimRight(line, " "))
			}
		}
		health := cl.Health
		if health == "" {
			health = "mode: check\ninterval: 100ms\ntimeout: 100ms\nunhealthy_threshold: 2\nhealthy_threshold: 1"
		}
		b.WriteString("    health_check:\n")
		for _, line := range strings.Split(strings.TrimSpace(health), "\n") {
			fmt.Fprintf(&b, "      %s\n", strings.TrimSpace(line))
		}
	}
	return b.String()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
