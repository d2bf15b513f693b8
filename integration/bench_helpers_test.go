package integration

// Shared machinery of the end-to-end benchmarks (bench_*_test.go):
//
//   - Helper processes: the test binary re-executes itself with
//     VIGIL_BENCH_HELPER set, and init below turns it into a backend fleet
//     or a TCP sink/source instead of running tests. Backends thus get a
//     process of their own (their own Go runtime, their own CPU account),
//     and so does vigil: every CPU and memory figure of vigil is read from
//     /proc/PID of the vigil process, never from this one.
//   - /proc sampling: CPU time (utime+stime, in clock ticks of 10 ms, so
//     measured windows last seconds) and VmRSS/VmHWM.
//   - A guard that refuses to measure race-enabled binaries: make bench
//     sets VIGIL_INTEGRATION_NORACE so that TestMain builds plain ones.
//
// The machine has 2 cores, shared by vigil, the backends and this process
// (load generator, log parser): each benchmark logs which processes ran,
// and each leaf benchmark reports the load average at its start as
// "loadavg".

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/binary"
	"errors"
	"fmt"
	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/orca"
)

const (
	// benchHelperEnv selects a helper mode: the process is then a helper,
	// not a test binary.
	benchHelperEnv = "VIGIL_BENCH_HELPER"
	// fleetBlockEnv and fleetCountEnv configure a fleet helper: its
	// address block (127.0.10+BLOCK.x) and how many endpoints it serves.
	fleetBlockEnv = "VIGIL_BENCH_FLEET_BLOCK"
	fleetCountEnv = "VIGIL_BENCH_FLEET_COUNT"
	fleetNetEnv   = "VIGIL_BENCH_FLEET_NET"
)

func init() {
	mode := os.Getenv(benchHelperEnv)
	if mode == "" {
		return
	}
	var err error
	switch mode {
	case "fleet":
		err = runFleetHelper()
	case "tcp-backend":
		err = runTCPBackendHelper()
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench helper %s: %v\n", mode, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// fleetPortsPerAddress is how many ports a fleet helper uses on each of its
// loopback addresses. The ports (21000 and up) are below Linux's ephemeral
// range (32768-60999), so that thousands of listeners do not starve the
// outgoing connections of their source ports.
const (
	fleetPortsPerAddress = 50
	fleetBasePort        = 21000
	// fleetMaxPerProcess keeps a helper within a 20,000 file limit (one
	// listener and one accepted connection per endpoint, and room for
	// connections being replaced): bigger fleets use several helpers.
	fleetMaxPerProcess = 4000
)

// runFleetHelper serves grpc.health.v1 (the whole server SERVING) on many
// loopback addresses with one grpc.Server: it prints each address on a
// line, then "ready", and stops when its stdin closes.
func runFleetHelper() error {
	block, err1 := strconv.Atoi(os.Getenv(fleetBlockEnv))
	count, err2 := strconv.Atoi(os.Getenv(fleetCountEnv))
	if err := errors.Join(err1, err2); err != nil || block < 0 || block > 200 || count <= 0 || count > fleetMaxPerProcess {
		return fmt.Errorf("bad fleet settings %s=%q %s=%q", fleetBlockEnv, os.Getenv(fleetBlockEnv), fleetCountEnv, os.Getenv(fleetCountEnv))
	}
	// The first two octets of the addresses: 127.0 (loopback), or 198.18
	// inside the Kubernetes tests' namespace, whose API server refuses
	// loopback EndpointSlice addresses.
	network := os.Getenv(fleetNetEnv)
	if network == "" {
		network = "127.0"
	}
	raiseFileLimit()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	// ORCA load reports at the interval asked (BenchmarkLoadReportCost):
	// utilization 0.5 at 100 qps, the same on every address.
	load := orca.NewServerMetricsRecorder()
	load.SetApplicationUtilization(0.5)
	load.SetQPS(100)
	v3orcaservicepb.RegisterOpenRcaServiceServer(srv, &intervalORCA{smr: load})
	// TestService too, so that load through vigil has somewhere to go.
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	var listeners []net.Listener
	out := bufio.NewWriter(os.Stdout)
	// Candidates in order; one already taken (by another program) is
	// skipped.
	for j := 0; len(listeners) < count; j++ {
		host := j / fleetPortsPerAddress
		if host >= 250 {
			return fmt.Errorf("found only %d free addresses in block %d", len(listeners), block)
		}
		addr := fmt.Sprintf("%s.%d.%d:%d", network, 10+block, 1+host, fleetBasePort+j%fleetPortsPerAddress)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		listeners = append(listeners, ln)
		fmt.Fprintln(out, addr)
	}
	var wg sync.WaitGroup
	for _, ln := range listeners {
		wg.Go(func() { _ = srv.Serve(ln) })
	}
	fmt.Fprintln(out, "ready")
	if err := out.Flush(); err != nil {
		return fmt.Errorf("print addresses: %w", err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	srv.Stop()
	wg.Wait()
	return nil
}

// runTCPBackendHelper is a bulk TCP sink and source on 127.0.0.1:0. A
// connection's first byte says what it wants: 'U' (upload) is followed by
// the data, read until EOF, and answered with its byte count (8 bytes, big
// endian); 'D' (download) is followed by a byte count (8 bytes, big
// endian), answered with that many bytes and a close. Anything else (a
// health probe's bare connect) is closed. It prints its address and stops
// when its stdin closes.
func runTCPBackendHelper() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	fmt.Println(ln.Addr())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serveBulk(c.(*net.TCPConn)) })
		}
	})
	_, _ = io.Copy(io.Discard, os.Stdin)
	ln.Close()
	wg.Wait()
	return nil
}

func serveBulk(c *net.TCPConn) {
	defer c.Close()
	var cmd [9]byte
	if _, err := io.ReadFull(c, cmd[:1]); err != nil {
		return
	}
	buf := make([]byte, 256<<10)
	switch cmd[0] {
	case 'U':
		var n uint64
		for {
			k, err := c.Read(buf)
			n += uint64(k)
			if err != nil {
				break
			}
		}
		binary.BigEndian.PutUint64(cmd[1:], n)
		_, _ = c.Write(cmd[1:])
	case 'D':
		if _, err := io.ReadFull(c, cmd[1:]); err != nil {
			return
		}
		for left := binary.BigEndian.Uint64(cmd[1:]); left > 0; {
			k := min(left, uint64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
			left -= k
		}
	}
}

// raiseFileLimit lifts RLIMIT_NOFILE as far as this process may (the hard
// limit, or 65536 where raising the hard limit is allowed), and returns
// the soft limit in force. Children started afterwards inherit it.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Max < 65536 {
		want := syscall.Rlimit{Cur: 65536, Max: 65536}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
			return want.Cur
		}
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	return lim.Cur
}

// helperProc is this test binary running as a helper process.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines *bufio.Scanner
	done  chan struct{}
}

// startHelper starts a helper in mode with extra environment variables and
// returns it once it has printed its first line.
func startHelper(tb testing.TB, mode string, env ...string) *helperProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), benchHelperEnv+"="+mode), env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s helper: %v", mode, err)
	}
	h := &helperProc{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout), done: make(chan struct{})}
	tb.Cleanup(func() { h.stop(tb) })
	return h
}

// line returns the helper's next line of output.
func (h *helperProc) line(tb testing.TB) string {
	tb.Helper()
	if !h.lines.Scan() {
		tb.Fatalf("helper %v ended its output early: %v", h.cmd.Args, h.lines.Err())
	}
	return h.lines.Text()
}

func (h *helperProc) pid() int { return h.cmd.Process.Pid }

// stop closes the helper's stdin, which asks it to exit, and waits for it;
// one that does not exit within 10 s is killed.
func (h *helperProc) stop(tb testing.TB) {
	select {
	case <-h.done:
		return
	default:
	}
	h.stdin.Close()
	exited := make(chan error, 1)
	go func() {
		for h.lines.Scan() {
		}
		exited <- h.cmd.Wait()
	}()
	select {
	case err := <-exited:
		if err != nil {
			tb.Errorf("helper %v: %v", h.cmd.Args, err)
		}
	case <-time.After(10 * time.Second):
		_ = h.cmd.Process.Kill()
		<-exited
		tb.Errorf("helper %v did not exit within 10s of its stdin closing", h.cmd.Args)
	}
	close(h.done)
}

// fleet is a set of fleet helpers serving count health-only endpoints.
type fleet struct {
	addrs   []string
	helpers []*helperProc
}

// startFleet starts enough fleet helpers for count endpoints. Blocks of
// addresses must not overlap between fleets alive at the same time:
// firstBlock numbers the first helper's block.
func startFleet(tb testing.TB, count, firstBlock int) *fleet {
	return startFleetOn(tb, "127.0", count, firstBlock)
}

// startFleetOn is startFleet on addresses network.X.Y (network "198.18"
// inside the Kubernetes tests' namespace).
func startFleetOn(tb testing.TB, network string, count, firstBlock int) *fleet {
	tb.Helper()
	f := &fleet{}
	for block := firstBlock; len(f.addrs) < count; block++ {
		n := min(fleetMaxPerProcess, count-len(f.addrs))
		h := startHelper(tb, "fleet", fmt.Sprintf("%s=%d", fleetBlockEnv, block), fmt.Sprintf("%s=%d", fleetCountEnv, n), fleetNetEnv+"="+network)
		for {
			line := h.line(tb)
			if line == "ready" {
				break
			}
			f.addrs = append(f.addrs, line)
		}
		f.helpers = append(f.helpers, h)
	}
	return f
}

func (f *fleet) cpu(tb testing.TB) time.Duration {
	var total time.Duration
	for _, h := range f.helpers {
		total += procCPU(tb, h.pid())
	}
	return total
}

// clockTicksPerSecond is USER_HZ, the unit of /proc/PID/stat's times
// (100 on Linux; getconf CLK_TCK).
const clockTicksPerSecond = 100

// procCPU is the user+system CPU time of process pid so far, from
// /proc/PID/stat (10 ms resolution).
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatalf("read CPU time of process %d: %v", pid, err)
	}
	ticks, _, err := parseStat(stat)
	if err != nil {
		tb.Fatalf("/proc/%d/stat: %v", pid, err)
	}
	return time.Duration(ticks) * time.Second / clockTicksPerSecond
}

// parseStat returns utime+stime and the parent pid from a /proc/PID/stat
// line. The fields are counted after the command name, which is in
// parentheses and may hold spaces: ppid is field 4, utime and stime are
// fields 14 and 15.
func parseStat(stat []byte) (ticks int64, ppid int, err error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, 0, fmt.Errorf("no command name in %q", stat)
	}
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 13 {
		return 0, 0, fmt.Errorf("too few fields in %q", stat)
	}
	ppid, err1 := strconv.Atoi(fields[1])
	utime, err2 := strconv.ParseInt(fields[11], 10, 64)
	stime, err3 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, fmt.Errorf("parse %q: %w", stat, err)
	}
	return utime + stime, ppid, nil
}

// treeCPU is the CPU time of pid and of its live descendants (nginx's
// workers), read from every /proc/PID/stat.
func treeCPU(tb testing.TB, root int) time.Duration {
	tb.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		tb.Fatal(err)
	}
	type proc struct {
		ticks int64
		ppid  int
	}
	procs := map[int]proc{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if ticks, ppid, err := parseStat(stat); err == nil {
			procs[pid] = proc{ticks, ppid}
		}
	}
	var total int64
	for pid, p := range procs {
		for anc := pid; anc > 1; anc = procs[anc].ppid {
			if anc == root {
				total += p.ticks
				break
			}
			if _, ok := procs[anc]; !ok {
				break
			}
		}
	}
	return time.Duration(total) * time.Second / clockTicksPerSecond
}

// procMem returns VmRSS and VmHWM (peak RSS) of process pid, in KiB.
func procMem(tb testing.TB, pid int) (rss, hwm int64) {
	tb.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read memory of process %d: %v", pid, err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			rss = kib
		case "VmHWM":
			hwm = kib
		}
	}
	return rss, hwm
}

// loadAverage is the 1-minute load average of the machine.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	return f
}

// benchSetup refuses to measure race-enabled binaries, raises the file
// limit for vigil and the helpers to inherit, and reports the machine's
// load average and what shares its cores.
func benchSetup(b *testing.B, sharing string) {
	b.Helper()
	if raceEnabled {
		b.Fatal("this test binary has the race detector: benchmarks must run without -race")
	}
	info, err := buildinfo.ReadFile(bin("vigil"))
	if err != nil {
		b.Fatalf("read build info of %s: %v", bin("vigil"), err)
	}
	for _, s := range info.Settings {
		if s.Key == "-race" && s.Value == "true" {
			b.Fatal("vigil was built with -race: run benchmarks with VIGIL_INTEGRATION_NORACE=1 (make bench does)")
		}
	}
	raiseFileLimit()
	b.Logf("2 cores shared by: %s; load average %.2f at start", sharing, loadAverage())
}

// reportLoad reports the 1-minute load average as "loadavg"; leaf
// benchmarks call it first (a parent benchmark's metrics are not printed).
// It includes the load of the benchmark that ran just before.
func reportLoad(b *testing.B) {
	b.ReportMetric(loadAverage(), "loadavg")
}

// benchDuration reads a duration from the environment, for runs longer or
// shorter than the default.
func benchDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration", name, s)
	}
	return d
}

// benchInt reads a positive integer from the environment.
func benchInt(tb testing.TB, name string, def int) int {
	tb.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// benchCluster and benchListener describe a configuration for
// renderBenchConfig, which writes big ones quickly and logs at info (the
// tests' yamlConfig logs at debug, which would cost vigil CPU here).
type benchCluster struct {
	name      string
	endpoints []string
	health    string // the health_check block's lines, unindented
	extra     string // more YAML lines for the cluster (sections such as tls), unindented
}

type benchListener struct {
	name, protocol, cluster string
	extra                   string // more YAML lines for the listener, unindented
}

func renderBenchConfig(listeners []benchListener, clusters []benchCluster) string {
	var b strings.Builder
	b.WriteString("admin:\n  address: \"\"\nlog:\n  format: json\n  level: info\nshutdown:\n  drain_delay: 0s\n  timeout: 2s\nlisteners:\n")
	if len(listeners) == 0 {
		b.WriteString("  []\n")
	}
	for _, l := range listeners {
		fmt.Fprintf(&b, "  - name: %s\n    address: 127.0.0.1:0\n    protocol: %s\n    cluster: %s\n", l.name, l.protocol, l.cluster)
		if l.extra != "" {
			for line := range strings.SplitSeq(strings.TrimSpace(l.extra), "\n") {
				fmt.Fprintf(&b, "    %s\n", line)
			}
		}
	}
	b.WriteString("clusters:\n")
	for _, c := range clusters {
		fmt.Fprintf(&b, "  - name: %s\n    panic_threshold: 0\n    endpoints:\n", c.name)
		for _, e := range c.endpoints {
			fmt.Fprintf(&b, "      - address: %s\n", e)
		}
		b.WriteString("    health_check:\n")
		for line := range strings.SplitSeq(strings.TrimSpace(c.health), "\n") {
			fmt.Fprintf(&b, "      %s\n", strings.TrimSpace(line))
		}
		if c.extra != "" {
			for line := range strings.SplitSeq(strings.TrimSpace(c.extra), "\n") {
				fmt.Fprintf(&b, "    %s\n", strings.TrimRight(line, " "))
			}
		}
	}
	return b.String()
}

// recordTime is the time a log record was written, by vigil's clock (the
// machine's).
func recordTime(tb testing.TB, r record) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, r.str("time"))
	if err != nil {
		tb.Fatalf("record without a time: %v", r)
	}
	return t
}

// waitRecords waits until n records from index from on satisfy pred, and
// returns the n-th. It scans each record once, so it stays cheap with tens
// of thousands of records.
func (v *vigilProc) waitRecords(timeout time.Duration, from int, pred func(record) bool, n int, what string) record {
	v.t.Helper()
	l := v.logs
	deadline := time.After(timeout)
	seen, next := 0, from
	for {
		l.mu.Lock()
		for ; next < len(l.records); next++ {
			if pred(l.records[next]) {
				if seen++; seen == n {
					r := l.records[next]
					l.mu.Unlock()
					return r
				}
			}
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			v.t.Fatalf("%d of %d records %s within %v; last records:\n%s", seen, n, what, timeout, v.logs.dump())
		}
	}
}

// count is how many records from index from on satisfy pred.
func (v *vigilProc) count(from int, pred func(record) bool) int {
	return len(v.logs.find(from, pred))
}

// tracedBackend is an in-process gRPC backend (grpc.testing.TestService
// UnaryCall and grpc.health.v1) that records when RPCs arrive, to see
// exactly when vigil starts or stops routing to it.
type tracedBackend struct {
	testgrpc.UnimplementedTestServiceServer
	addr   string
	health *health.Server
	calls  atomic.Int64
	last   atomic.Int64 // UnixNano of the latest UnaryCall's arrival
	first  atomic.Int64 // UnixNano of the first arrival since resetFirst
}

func startTracedBackend(tb testing.TB) *tracedBackend {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &tracedBackend{addr: ln.Addr().String(), health: health.NewServer()}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, b.health)
	testgrpc.RegisterTestServiceServer(srv, b)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	tb.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return b
}

func (b *tracedBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	now := time.Now().UnixNano()
	b.last.Store(now)
	b.first.CompareAndSwap(0, now)
	b.calls.Add(1)
	return &testgrpc.SimpleResponse{}, nil
}

func (b *tracedBackend) serving(ok bool) {
	s := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		s = healthpb.HealthCheckResponse_SERVING
	}
	b.health.SetServingStatus("", s)
}

// rpcLoop keeps workers making UnaryCalls back to back through one client
// connection, as fast as they can, until stopped.
type rpcLoop struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	ok, errs atomic.Int64
	mu       sync.Mutex
	firstErr error
}

func startRPCLoop(tb testing.TB, addr string, workers int) *rpcLoop {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tc := testgrpc.NewTestServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	l := &rpcLoop{cancel: cancel}
	for range workers {
		l.wg.Go(func() {
			req := &testgrpc.SimpleRequest{}
			for ctx.Err() == nil {
				callCtx, cancelCall := context.WithTimeout(ctx, 5*time.Second)
				_, err := tc.UnaryCall(callCtx, req)
				cancelCall()
				switch {
				case err == nil:
					l.ok.Add(1)
				case ctx.Err() == nil:
					l.errs.Add(1)
					l.mu.Lock()
					if l.firstErr == nil {
						l.firstErr = err
					}
					l.mu.Unlock()
					time.Sleep(time.Millisecond) // no busy loop while vigil has no upstream
				}
			}
		})
	}
	tb.Cleanup(func() {
		l.stop()
		_ = conn.Close()
	})
	return l
}

func (l *rpcLoop) err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.firstErr
}

func (l *rpcLoop) stop() {
	l.cancel()
	l.wg.Wait()
}

// waitUntil polls cond every millisecond until it holds, or fails the
// benchmark after timeout.
func waitUntil(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(time.Millisecond)
	}
}
