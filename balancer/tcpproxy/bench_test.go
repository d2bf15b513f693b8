package tcpproxy

// The benchmarks compare a transfer through the proxy with the same transfer
// made directly. To measure the proxy's own CPU time, separate from that of
// the benchmark's clients and backends, the proxy runs in a child process:
// the test binary re-executes itself with benchHelperEnv set, serves a
// Proxy on 127.0.0.1, and answers "cpu" on stdin with its user+system CPU
// time from getrusage. So "proxy-cpu-µs/MB" is what the proxy process alone
// spent, comparable with HAProxy's or nginx's CPU time on the same load.
//
//	go test -run '^$' -bench . -benchtime 2s ./balancer/tcpproxy/

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
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

// helperProxy is a proxy running in a child process.
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

// sink is a backend that reads everything and reports the byte count of
// each connection.
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
		received <- n
	})
	return be, received
}

// BenchmarkBulk measures one long transfer, client to backend, in 1 MiB
// operations: direct, through the proxy, and through the proxy with an idle
// timeout (whose deadline-driven copy loop must not cost throughput).
func BenchmarkBulk(b *testing.B) {
	for _, tc := range []struct {
		name  string
		proxy bool
		idle  time.Duration
	}{
		{"direct", false, 0},
		{"proxy", true, 0},
		{"proxy_idle_timeout", true, 5 * time.Second},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sink, received := startSink(b)
			addr := sink.addr()
			var h *helperProxy
			if tc.proxy {
				h = startHelperProxy(b, addr, tc.idle)
				addr = h.addr
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
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			c.(*net.TCPConn).CloseWrite()
			got := <-received
			b.StopTimer()
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
	for _, tc := range []struct {
		name  string
		proxy bool
	}{
		{"direct", false},
		{"proxy", true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := startBackend(b, echo).addr()
			var h *helperProxy
			if tc.proxy {
				h = startHelperProxy(b, addr, 0)
				addr = h.addr
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
