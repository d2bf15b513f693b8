// Package dnstest runs a real DNS server for tests: unbound, from Debian's
// package (.ci/install-dns installs it), on 127.0.0.1 with a port of its
// own, serving one authoritative zone whose records a test rewrites while
// it runs.
//
// unbound rather than dnsmasq or CoreDNS: it reloads a zone file atomically
// on request (unbound-control auth_zone_reload), so a change is in force
// the moment the call returns and no query ever sees a half-written zone;
// it serves A, AAAA and SRV records with the TTLs the file gives, answers
// NXDOMAIN and empty answers authoritatively, serves answers too big for
// UDP over TCP, and installs in seconds. dnsmasq reads SRV records only from
// its configuration at start, and CoreDNS would be a large build that
// notices a changed zone file only by polling.
//
// Goroutines: none. Each Server is one unbound process, stopped by the
// test's cleanup.
package dnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Zone is the zone every Server serves. ".test" is reserved for testing
// (RFC 6761), so no name of it exists anywhere else.
const Zone = "vigil.test."

// Names outside Zone whose lookups fail: the server answers SERVFAIL for
// ServfailName and REFUSED for RefusedName.
const (
	ServfailName = "x.servfail.test."
	RefusedName  = "x.refused.test."
)

// EnvRequire, set to 1, turns a missing unbound into a test failure
// rather than a skip; make test-dns sets it. VIGIL_REQUIRE_TOOLS=1, the
// project's switch for every such tool, does the same.
const EnvRequire = "VIGIL_TEST_DNS"

// Server is one unbound process serving Zone.
type Server struct {
	// Addr is host:port of the server (UDP and TCP).
	Addr string

	t        testing.TB
	unbound  string // path of the unbound binary
	control  string // path of unbound-control
	dir      string
	conf     string
	zoneFile string
	cmd      *exec.Cmd
	exited   chan struct{}
	log      *bytes.Buffer
}

// Binaries returns the paths of unbound and unbound-control, or an error
// that says how to install them.
func Binaries() (unbound, control string, err error) {
	find := func(name string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		p := filepath.Join("/usr/sbin", name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s not found: install it with .ci/install-dns (Debian package unbound), or run make test-dns", name)
		}
		return p, nil
	}
	if unbound, err = find("unbound"); err != nil {
		return "", "", err
	}
	if control, err = find("unbound-control"); err != nil {
		return "", "", err
	}
	return unbound, control, nil
}

// Require skips the test when unbound is not installed, or fails it when
// EnvRequire is set.
func Require(t testing.TB) {
	t.Helper()
	if _, _, err := Binaries(); err != nil {
		if os.Getenv(EnvRequire) == "1" || os.Getenv("VIGIL_REQUIRE_TOOLS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// Start starts unbound serving Zone with records: zone-file lines relative
// to Zone, like "orders 30 IN A 127.0.0.2" (see A, AAAA, SRV). Cleanup
// stops it.
func Start(t testing.TB, records ...string) *Server {
	t.Helper()
	Require(t)
	unbound, control, _ := Binaries()
	// unix socket paths are short: not under t.TempDir's long names.
	dir, err := os.MkdirTemp("", "unbound")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{
		t:        t,
		unbound:  unbound,
		control:  control,
		dir:      dir,
		conf:     filepath.Join(dir, "unbound.conf"),
		zoneFile: filepath.Join(dir, "zone"),
	}
	s.writeZone(records)
	var lastErr error
	for range 5 { // a free port found may be taken before unbound binds it
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.kill)
			return s
		}
	}
	t.Fatalf("start unbound: %v", lastErr)
	return nil
}

func (s *Server) writeConf() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	conf := fmt.Sprintf(`server:
  interface: 127.0.0.1
  port: %s
  do-daemonize: no
  chroot: ""
  username: ""
  directory: %q
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  so-reuseport: no
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  # .test is one of unbound's built-in empty zones; serve ours instead.
  local-zone: "test." nodefault
  # Names that fail: REFUSED, and SERVFAIL (unbound will not ask a
  # server on 127.0.0.1, so the stub has no usable address).
  local-zone: "refused.test." refuse
stub-zone:
  name: "servfail.test."
  stub-addr: 127.0.0.1@9
auth-zone:
  name: %[3]q
  zonefile: %q
  for-downstream: yes
  for-upstream: no
  fallback-enabled: no
remote-control:
  control-enable: yes
  control-interface: %q
  control-use-cert: no
`, port, s.dir, Zone, s.zoneFile, filepath.Join(s.dir, "control.sock"))
	return os.WriteFile(s.conf, []byte(conf), 0o644)
}

func (s *Server) start() error {
	if err := s.writeConf(); err != nil {
		return err
	}
	s.log = new(bytes.Buffer)
	s.cmd = exec.Command(s.unbound, "-d", "-c", s.conf)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		return err
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(s.cmd, s.exited)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("unbound exited: %s", strings.TrimSpace(s.log.String()))
		default:
		}
		if s.answers() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.kill()
	return errors.New("unbound did not answer within 15s")
}

// answers reports whether the server answers a query for Zone's SOA.
func (s *Server) answers() bool {
	m := new(dns.Msg).SetQuestion(Zone, dns.TypeSOA)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	r, _, err := c.Exchange(m, s.Addr)
	return err == nil && r.Rcode == dns.RcodeSuccess && len(r.Answer) == 1
}

func (s *Server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a paused server cannot act on SIGTERM
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

// Stop stops the server: queries are refused (ICMP port unreachable).
func (s *Server) Stop() {
	s.t.Helper()
	s.kill()
}

// Restart starts the server again on the same address, with the records
// last set.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("restart unbound on %s: %v", s.Addr, err)
	}
}

// Pause stops the process (SIGSTOP) without closing its sockets: queries
// time out. Resume continues it.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume continues a paused server.
func (s *Server) Resume() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		s.t.Fatal(err)
	}
}

// Set replaces every record of the zone with records and returns once the
// server answers with them: the change is atomic, no query sees a mix.
func (s *Server) Set(records ...string) {
	s.t.Helper()
	s.writeZone(records)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.control, "-c", s.conf, "auth_zone_reload", strings.TrimSuffix(Zone, ".")).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ok") {
		s.t.Fatalf("unbound-control auth_zone_reload: %v: %s", err, out)
	}
}

// serial numbers the zone versions (unbound reloads regardless).
var serial atomic.Uint32

func (s *Server) writeZone(records []string) {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n@ 3600 IN SOA ns.%s hostmaster.%s %d 3600 600 86400 1\n@ 3600 IN NS ns.%s\nns 3600 IN A 127.0.0.1\n", Zone, Zone, Zone, serial.Add(1), Zone)
	for _, r := range records {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	tmp := s.zoneFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.zoneFile); err != nil {
		s.t.Fatal(err)
	}
}

// A is a zone-file line: name (relative to Zone) has address ip.
func A(name string, ttl int, ip string) string {
	return fmt.Sprintf("%s %d IN A %s", name, ttl, ip)
}

// AAAA is a zone-file line: name has IPv6 address ip.
func AAAA(name string, ttl int, ip string) string {
	return fmt.Sprintf("%s %d IN AAAA %s", name, ttl, ip)
}

// SRV is a zone-file line: name has an SRV record for target:port.
func SRV(name string, ttl int, priority, weight, port int, target string) string {
	return fmt.Sprintf("%s %d IN SRV %d %d %d %s", name, ttl, priority, weight, port, target)
}

// Name is name fully qualified in Zone.
func Name(name string) string { return name + "." + Zone }

// freePort returns a port free for both TCP and UDP on 127.0.0.1 right now.
func freePort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}
