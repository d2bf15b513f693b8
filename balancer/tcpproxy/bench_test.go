package tcpproxy

// The benchmarks compare a transfer through the proxy with the same transfer
// made directly and, when they are installed, through HAProxy (mode tcp) and
// nginx (stream), all fed by the same client and backend.
//
// To measure the proxy's own CPU time, separate from that of the
// benchmark's clients and backends, the proxy runs in a child process: the
// test binary re-executes itself with benchHelperEnv set, serves a Proxy on
// 127.0.0.1, and answers "cpu" on stdin with its user+system CPU time from
// getrusage. HAProxy's and nginx's CPU time is read from /proc/PID/stat (in
// clock ticks, so runs should last a second or more). "proxy-cpu-µs/MB" is
// thus what the proxy process alone spent; "ends-cpu-µs/MB" is what the
// benchmark's own client and backend spent (the whole cost of a direct
// transfer).
//
//	go test -run '^$' -bench . -benchtime 2s -count 5 ./balancer/tcpproxy/
//
// The machine's other load moves MB/s a lot; compare runs made together,
// preferably with -count and benchstat. The CPU figures are steadier.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	benchHelperEnv   = "VIGIL_TCPPROXY_BENCH_HELPER"
	benchUpstreamEnv = "VIGIL_TCPPROXY_BENCH_UPSTREAM"
	benchIdleEnv     = "VIGIL_TCPPROXY_BENCH_IDLE"
	// benchProfileEnv, set when running the benchmarks, makes each proxy
	// process write a CPU profile to this path plus a sequence number.
	benchProfileEnv = "VIGIL_TCPPROXY_BENCH_CPUPROFILE"
)

// runBenchHelper is the child process's main: a proxy to the upstream named
// in the environment. It prints its address, answers "cpu" with its CPU time
// in microseconds, and exits when stdin closes.
func runBenchHelper() int {
	idle, _ := time.ParseDuration(os.Getenv(benchIdleEnv))
	cluster, _ := newCluster("bench", os.Getenv(benchUpstreamEnv))
	p := New(cluster, Options{IdleTimeout: idle})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	if path := os.Getenv(benchProfileEnv); path != "" {
		f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer f.Close()
			defer pprof.StopCPUProfile()
		}
	}
	fmt.Println(ln.Addr())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "cpu" {
			fmt.Println(processCPU().Microseconds())
		}
	}
	p.Close()
	if err := <-served; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// proxyProcess is a proxy under test running in its own process.
type proxyProcess interface {
	// address is where the proxy listens.
	address() string
	// cpu is the process's user+system CPU time so far.
	cpu(b *testing.B) time.Duration
}

// helperProxy is vigil's proxy running in a child process.
type helperProxy struct {
	addr string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
}

func startHelperProxy(b *testing.B, upstream string, idle time.Duration) *helperProxy {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchHelperEnv+"=1", benchUpstreamEnv+"="+upstream, benchIdleEnv+"="+idle.String())
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start proxy process: %v", err)
	}
	h := &helperProxy{cmd: cmd, in: in, out: bufio.NewScanner(outPipe)}
	b.Cleanup(func() {
		h.in.Close()
		if err := h.cmd.Wait(); err != nil {
			b.Errorf("proxy process: %v", err)
		}
	})
	if !h.out.Scan() {
		b.Fatalf("proxy process did not print its address: %v", h.out.Err())
	}
	h.addr = h.out.Text()
	return h
}

func (h *helperProxy) address() string { return h.addr }

// cpu asks the child for its CPU time so far.
func (h *helperProxy) cpu(b *testing.B) time.Duration {
	b.Helper()
	if _, err := io.WriteString(h.in, "cpu\n"); err != nil {
		b.Fatal(err)
	}
	if !h.out.Scan() {
		b.Fatalf("proxy process: %v", h.out.Err())
	}
	us, err := strconv.ParseInt(strings.TrimSpace(h.out.Text()), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(us) * time.Microsecond
}

// startSink starts a backend that reads everything and reports the byte
// count of each connection that sent any.
func startSink(b *testing.B) (*backend, chan int64) {
	received := make(chan int64, 1)
	be := startBackend(b, func(c *net.TCPConn) {
		buf := make([]byte, 256<<10)
		var n int64
		for {
			k, err := c.Read(buf)
			n += int64(k)
			if err != nil {
				break
			}
		}
		if n > 0 { // not a readiness probe of an external proxy
			received <- n
		}
	})
	return be, received
}

// benchTargets are the ways a benchmark reaches its backend.
var benchTargets = []struct {
	name  string
	start func(b *testing.B, upstream string) proxyProcess // nil: direct
}{
	{"direct", nil},
	{"proxy", func(b *testing.B, upstream string) proxyProcess {
		return startHelperProxy(b, upstream, 0)
	}},
	{"proxy_idle_timeout", func(b *testing.B, upstream string) proxyProcess {
		return startHelperProxy(b, upstream, 5*time.Second)
	}},
	{"haproxy", func(b *testing.B, upstream string) proxyProcess {
		return startExternalProxy(b, "haproxy", upstream, haproxyConfig)
	}},
	{"nginx", func(b *testing.B, upstream string) proxyProcess {
		return startExternalProxy(b, "nginx", upstream, nginxConfig)
	}},
}

// BenchmarkBulk measures one long transfer, client to backend, in 1 MiB
// operations: direct, through the proxy, and through the proxy with an idle
// timeout (whose deadline-driven copy loop must not cost throughput).
func BenchmarkBulk(b *testing.B) {
	for _, tc := range benchTargets {
		b.Run(tc.name, func(b *testing.B) {
			sink, received := startSink(b)
			addr := sink.addr()
			var h proxyProcess
			if tc.start != nil {
				h = tc.start(b, addr)
				addr = h.address()
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, 1<<20)
			const warmup = 16
			for range warmup {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf)))
			var cpuBefore time.Duration
			if h != nil {
				cpuBefore = h.cpu(b)
			}
			ownBefore := processCPU()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			got := <-received
			b.StopTimer()
			own := processCPU() - ownBefore
			b.ReportMetric(float64(own.Microseconds())/float64(b.N), "ends-cpu-µs/MB")
			if want := int64(warmup+b.N) * int64(len(buf)); got != want {
				b.Fatalf("backend received %d bytes, want %d", got, want)
			}
			if h != nil {
				cpu := h.cpu(b) - cpuBefore
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "proxy-cpu-µs/MB")
			}
		})
	}
}

// BenchmarkConnect measures connection setup: each operation dials, sends a
// byte, reads the echo and closes, from several clients at once.
func BenchmarkConnect(b *testing.B) {
	for _, tc := range benchTargets {
		if tc.name == "proxy_idle_timeout" {
			continue
		}
		b.Run(tc.name, func(b *testing.B) {
			addr := startBackend(b, echo).addr()
			var h proxyProcess
			if tc.start != nil {
				h = tc.start(b, addr)
				addr = h.address()
			}
			var cpuBefore time.Duration
			if h != nil {
				cpuBefore = h.cpu(b)
			}
			b.SetParallelism(4)
			start := time.Now()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var one [1]byte
				for pb.Next() {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := c.Write(one[:]); err != nil {
						b.Error(err)
					}
					if _, err := io.ReadFull(c, one[:]); err != nil {
						b.Error(err)
					}
					c.Close()
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "conns/s")
			if h != nil {
				cpu := h.cpu(b) - cpuBefore
				b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "proxy-cpu-µs/conn")
			}
		})
	}
}

// externalProxy is another proxy program (HAProxy, nginx) run for
// comparison.
type externalProxy struct {
	addr string
	cmd  *exec.Cmd
}

func (e *externalProxy) address() string { return e.addr }

// cpu reads utime and stime from /proc/PID/stat.
func (e *externalProxy) cpu(b *testing.B) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime and stime are fields 14 and 15.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("parse /proc/%d/stat: %q", e.cmd.Process.Pid, stat)
	}
	const clockTicksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicksPerSecond
}

// startExternalProxy runs program with the configuration built by config
// for a listening address and upstream, or skips the benchmark when the
// program is not installed.
func startExternalProxy(b *testing.B, program, upstream string, config func(dir, listen, upstream string) []string) *externalProxy {
	b.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		b.Skipf("%s is not installed", program)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(path, config(b.TempDir(), listen, upstream)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", program, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	waitFor(b, program+" to listen", func() bool {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			b.Fatalf("%s exited: %v", program, err)
		default:
		}
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return &externalProxy{addr: listen, cmd: cmd}
}

// haproxyConfig is HAProxy in mode tcp with its defaults (threads as many
// as CPUs, no splicing).
func haproxyConfig(dir, listen, upstream string) []string {
	cfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(cfg, []byte(`global
    maxconn 4096
defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend bench
    bind `+listen+`
    default_backend bench
backend bench
    server upstream `+upstream+`
`), 0o644)
	return []string{"-db", "-f", cfg}
}

// nginxConfig is nginx's stream proxy as one process (no master), so that
// its CPU time is that of one pid.
func nginxConfig(dir, listen, upstream string) []string {
	cfg := filepath.Join(dir, "nginx.conf")
	module := ""
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err == nil {
		module = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
	}
	os.WriteFile(cfg, []byte(module+`daemon off;
master_process off;
pid `+filepath.Join(dir, "nginx.pid")+`;
error_log stderr warn;
events { worker_connections 4096; }
stream {
    server {
        listen `+listen+`;
        proxy_pass `+upstream+`;
    }
}
`), 0o644)
	return []string{"-p", dir, "-c", cfg}
}
