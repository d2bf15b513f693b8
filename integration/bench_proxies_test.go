package integration

// The proxies the end-to-end benchmarks compare: vigil (the real binary)
// and, where installed, HAProxy and nginx with configurations that do the
// same job. Each is one process tree whose CPU time is read from /proc.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proxyUnderTest is a running proxy: where clients connect, and how much
// CPU time its processes have used so far.
type proxyUnderTest struct {
	name string
	addr string
	cpu  func(testing.TB) time.Duration
	// skip, when set, says why this proxy cannot be measured here.
	skip string
	// profile, when set, takes a CPU profile of the proxy for d.
	profile func(tb testing.TB, d time.Duration)
}

// vigilProxy wraps a running vigil and the address of one of its
// listeners.
func vigilProxy(v *vigilProc, listener string) proxyUnderTest {
	pid := v.cmd.Process.Pid
	return proxyUnderTest{name: "vigil", addr: v.listener(listener), cpu: func(tb testing.TB) time.Duration { return procCPU(tb, pid) }}
}

// startExternalProxy runs program with the configuration that config
// writes for a listening address, or returns a proxyUnderTest that says why
// it is skipped when the program is not installed.
func startExternalProxy(tb testing.TB, program string, config func(tb testing.TB, dir, listen string) []string) proxyUnderTest {
	tb.Helper()
	path, err := exec.LookPath(program)
	if err != nil {
		return proxyUnderTest{name: program, skip: program + " is not installed (apt-get install -y haproxy nginx)"}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(path, config(tb, tb.TempDir(), listen)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", program, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			tb.Fatalf("%s exited at start: %v", program, err)
		default:
		}
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s does not listen on %s after 10s", program, listen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid := cmd.Process.Pid
	return proxyUnderTest{name: program, addr: listen, cpu: func(tb testing.TB) time.Duration { return treeCPU(tb, pid) }}
}

// haproxyTCP is HAProxy in mode tcp with its defaults (as many threads as
// CPUs, no splicing).
func haproxyTCP(upstream string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		return writeConfig(tb, dir, "haproxy.cfg", `global
    maxconn 8000
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
`, "-db", "-f")
	}
}

// haproxyGRPC is HAProxy in mode http, HTTP/2 cleartext on both sides
// (proto h2), round robin over the upstreams.
func haproxyGRPC(upstreams []string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		var servers strings.Builder
		for i, u := range upstreams {
			fmt.Fprintf(&servers, "    server s%d %s proto h2\n", i, u)
		}
		return writeConfig(tb, dir, "haproxy.cfg", `global
    maxconn 8000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
frontend bench
    bind `+listen+` proto h2
    default_backend bench
backend bench
    balance roundrobin
`+servers.String(), "-db", "-f")
	}
}

// nginxPreamble runs nginx in the foreground with a master and one worker
// per CPU (its usual set-up; the CPU time counted is the whole tree's),
// with every path inside dir.
func nginxPreamble(dir string) string {
	return `daemon off;
master_process on;
worker_processes auto;
pid ` + filepath.Join(dir, "nginx.pid") + `;
error_log stderr warn;
events { worker_connections 8000; }
`
}

// nginxTCP is nginx's stream proxy, forwarding half-closes like the
// others (proxy_half_close, nginx 1.21.4 and later).
func nginxTCP(upstream string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		module := ""
		if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err == nil {
			module = "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
		}
		return writeConfig(tb, dir, "nginx.conf", module+nginxPreamble(dir)+`stream {
    server {
        listen `+listen+`;
        proxy_pass `+upstream+`;
        proxy_half_close on;
    }
}
`, "-p", dir, "-c")
	}
}

// nginxGRPC is nginx's grpc_pass over HTTP/2 cleartext, round robin over
// the upstreams with kept-alive upstream connections, and limits lifted so
// that neither side's connection is recycled every 1,000 requests (the
// default) during a run, a long stream is not cut at 1 MiB of request
// body (client_max_body_size), and no passive health marking (max_fails=0):
// RPCs cancelled by the client at the end of a run come back from the
// backend as RST_STREAM CANCEL, which nginx would count as the upstream
// failing and answer 502 for 10 s. vigil and HAProxy do no such marking.
func nginxGRPC(upstreams []string) func(tb testing.TB, dir, listen string) []string {
	return func(tb testing.TB, dir, listen string) []string {
		var servers strings.Builder
		for _, u := range upstreams {
			fmt.Fprintf(&servers, "        server %s max_fails=0;\n", u)
		}
		return writeConfig(tb, dir, "nginx.conf", nginxPreamble(dir)+`http {
    access_log off;
    client_body_temp_path `+filepath.Join(dir, "body")+`;
    proxy_temp_path `+filepath.Join(dir, "proxy")+`;
    fastcgi_temp_path `+filepath.Join(dir, "fastcgi")+`;
    uwsgi_temp_path `+filepath.Join(dir, "uwsgi")+`;
    scgi_temp_path `+filepath.Join(dir, "scgi")+`;
    keepalive_requests 100000000;
    http2_max_concurrent_streams 1000;
    client_max_body_size 0;
    upstream bench {
`+servers.String()+`        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen `+listen+` http2;
        location / {
            grpc_pass grpc://bench;
        }
    }
}
`, "-p", dir, "-c")
	}
}

// writeConfig writes a configuration file and returns the program's
// arguments: args, then the file's path.
func writeConfig(tb testing.TB, dir, name, content string, args ...string) []string {
	tb.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
	return append(args, path)
}
