package integration

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkTCPBulk (issue 2) moves bulk data through a tcp listener, and
// for comparison directly to the backend and through HAProxy (mode tcp) and
// nginx (stream) when installed: one op is one connection that uploads (or
// downloads) VIGIL_BENCH_TCP_MIB MiB (default 1024). The backend is a
// sink/source helper process; this process is the client.
//
// Metrics: MB/s (10^6 bytes), and the proxy's own CPU time per MB
// ("proxy-cpu-µs/MB", from /proc/PID/stat, 10 ms resolution). The ratio to
// direct is computed by benchsummary. Targets: ratio ≥ 0.44 (HAProxy's),
// ≤ 600 µs/MB.
//
//	VIGIL_INTEGRATION_NORACE=1 go test -run '^$' -bench TCPBulk -benchtime 1x ./integration/
func BenchmarkTCPBulk(b *testing.B) {
	benchSetup(b, "this process (client), the sink/source helper process, the proxy being measured (the others idle)")
	helper := startHelper(b, "tcp-backend")
	backend := helper.line(b)
	size := int64(benchInt(b, "VIGIL_BENCH_TCP_MIB", 1024)) << 20

	v := startVigil(b, renderBenchConfig(
		[]benchListener{{name: "bulk", protocol: "tcp", cluster: "bulk"}},
		[]benchCluster{{name: "bulk", endpoints: []string{backend}, health: "mode: tcp\ninterval: 5s\ntimeout: 1s"}},
	))
	v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", backend), "backend admitted")
	targets := []proxyUnderTest{
		{name: "direct", addr: backend},
		vigilProxy(v, "bulk"),
		startExternalProxy(b, "haproxy", haproxyTCP(backend)),
		startExternalProxy(b, "nginx", nginxTCP(backend)),
	}
	for _, direction := range []string{"upload", "download"} {
		transfer := upload
		if direction == "download" {
			transfer = download
		}
		b.Run(direction, func(b *testing.B) {
			for _, target := range targets {
				b.Run(target.name, func(b *testing.B) {
					if target.skip != "" {
						b.Skip(target.skip)
					}
					reportLoad(b)
					// Warm up (connection set-up paths, TCP buffers).
					if err := transfer(target.addr, 64<<20); err != nil {
						b.Fatalf("warm-up %s through %s: %v", direction, target.name, err)
					}
					var cpuBefore time.Duration
					if target.cpu != nil {
						cpuBefore = target.cpu(b)
					}
					start := time.Now()
					for range b.N {
						if err := transfer(target.addr, size); err != nil {
							b.Fatalf("%s through %s: %v", direction, target.name, err)
						}
					}
					elapsed := time.Since(start)
					mb := float64(size) * float64(b.N) / 1e6
					b.ReportMetric(mb/elapsed.Seconds(), "MB/s")
					if target.cpu != nil {
						cpu := target.cpu(b) - cpuBefore
						b.ReportMetric(float64(cpu.Microseconds())/mb, "proxy-cpu-µs/MB")
					}
				})
			}
		})
	}
}

// upload sends size bytes to the sink through addr and checks that all of
// them arrived.
func upload(addr string, size int64) error { return uploadOver(tcpDialer(addr), size) }

// download asks the source for size bytes through addr and reads them all.
func download(addr string, size int64) error { return downloadOver(tcpDialer(addr), size) }

func tcpDialer(addr string) func() (net.Conn, error) {
	return func() (net.Conn, error) { return net.Dial("tcp", addr) }
}

// uploadOver is upload over a connection dial makes (TLS, say).
func uploadOver(dial func() (net.Conn, error), size int64) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 1<<20)
	buf[0] = 'U'
	if _, err := c.Write(buf[:1]); err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:n]); err != nil {
			return fmt.Errorf("after %d bytes: %w", size-left, err)
		}
		left -= n
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("read the sink's count: %w", err)
	}
	if n := binary.BigEndian.Uint64(got[:]); n != uint64(size) {
		return fmt.Errorf("sink received %d bytes, want %d", n, size)
	}
	return nil
}

// downloadOver is download over a connection dial makes.
func downloadOver(dial func() (net.Conn, error), size int64) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	var cmd [9]byte
	cmd[0] = 'D'
	binary.BigEndian.PutUint64(cmd[1:], uint64(size))
	if _, err := c.Write(cmd[:]); err != nil {
		return fmt.Errorf("send command: %w", err)
	}
	// A plain read loop: io.Copy to io.Discard would read 8 KiB at a time.
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", n, err)
		}
	}
	if n != size {
		return fmt.Errorf("received %d bytes, want %d", n, size)
	}
	return nil
}
