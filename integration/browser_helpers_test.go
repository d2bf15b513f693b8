//go:build browser

package integration

// The browser tests' machinery (make test-browser; not in make test): a
// headless Debian chromium driven over the DevTools protocol by
// chromedp, and a fleet of health servers in a helper process whose
// endpoints can be flipped one by one.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// browserArtifacts is where screenshots go: bin/browser of the repository.
const browserArtifacts = "../bin/browser"

// browser is one headless chromium with one tab.
type browser struct {
	t   testing.TB
	ctx context.Context

	mu        sync.Mutex
	console   []string // console messages of level error or warning, exceptions, log entries
	received  int64    // bytes received on the page's streams (Network.dataReceived)
	streamIDs map[network.RequestID]bool
}

// chromiumPath finds Debian's chromium; a missing one fails the test in
// CI (VIGIL_CI=1) and skips it elsewhere.
func chromiumPath(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("VIGIL_CI") != "" || os.Getenv("VIGIL_REQUIRE_TOOLS") != "" {
		t.Fatal("chromium not found: .ci/install-chromium installs it (make test-browser runs it)")
	}
	t.Skip("chromium not found: run .ci/install-chromium, or make test-browser")
	return ""
}

// newBrowser starts chromium with a fresh profile; it is stopped when the
// test ends.
func newBrowser(t testing.TB) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("enable-precise-memory-info", true),
		chromedp.WindowSize(1600, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, streamIDs: map[network.RequestID]bool{}}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(b.onEvent))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	enable := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, t, performance.Enable, performance.EnableParams{}); err != nil {
			return err
		}
		if _, err := cdp.Call(ctx, t, log.Enable, cdp.Empty{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, runtime.Enable, cdp.Empty{})
		return err
	})
	if err := chromedp.Do(ctx, enable); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

func (b *browser) onEvent(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning || e.Type == runtime.ConsoleAPICalledTypeAssert {
			var parts []string
			for _, a := range e.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			b.console = append(b.console, fmt.Sprintf("console.%s: %s", e.Type, strings.Join(parts, " ")))
		}
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		desc := ""
		if d.Exception != nil {
			desc = d.Exception.Description
		}
		b.console = append(b.console, fmt.Sprintf("exception: %s %s at %s:%d", d.Text, desc, d.URL, d.LineNumber))
	case *log.EventEntryAdded:
		if e.Entry.Level == log.EntryLevelError || e.Entry.Level == log.EntryLevelWarning {
			b.console = append(b.console, fmt.Sprintf("log %s %s: %s %s", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL))
		}
	case *network.EventRequestWillBeSent:
		if strings.Contains(e.Request.URL, "/ui/stream") {
			b.streamIDs[e.RequestID] = true
		}
	case *network.EventDataReceived:
		if b.streamIDs[e.RequestID] {
			b.received += e.EncodedDataLength
		}
	}
}

// problems returns what the console and the log said at level warning or
// error, and exceptions, so far.
func (b *browser) problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

// streamBytes is how many bytes the page's streams have received so far.
func (b *browser) streamBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.received
}

// do runs chromedp actions, failing the test on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// open loads url and waits for the live view's first message.
func (b *browser) open(url string) {
	b.t.Helper()
	b.do("open "+url, chromedp.Navigate(url))
	b.waitJS("the first message of /ui/stream", 30*time.Second, `window.vigilStatus && window.vigilStatus.messages > 0 && !document.getElementById('static')`)
}

// evalJS evaluates a JavaScript expression into a T.
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("eval %s: %v", expr, err)
	}
	return v
}

// waitJS waits until expr is truthy in the page, polled every 20 ms, and
// returns how long that took.
func (b *browser) waitJS(what string, timeout time.Duration, expr string) time.Duration {
	b.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 3000) : ''`))
		b.screenshot("failed-" + sanitize(b.t.Name()))
		b.t.Fatalf("waiting for %s (%s): %v after %v; page text:\n%s", what, expr, err, time.Since(start), text)
	}
	return time.Since(start)
}

// filter types into the endpoint filter box.
func (b *browser) filter(text string) {
	b.t.Helper()
	evalJS[bool](b, `(() => { const f = document.getElementById('filter'); f.value = `+jsString(text)+`; f.dispatchEvent(new Event('input')); return true; })()`)
}

// screenshot saves the window as bin/browser/NAME.png and returns the path.
func (b *browser) screenshot(name string) string {
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	if err := os.MkdirAll(browserArtifacts, 0o755); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(browserArtifacts, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	b.t.Logf("screenshot: bin/browser/%s.png", name)
	return p
}

// metrics returns the page's JS heap in use (bytes) and its DOM node count.
func (b *browser) metrics() (heap, nodes float64) {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, performance.GetMetrics, cdp.Empty{})
	if err != nil {
		b.t.Fatalf("performance metrics: %v", err)
	}
	for _, m := range res.Metrics {
		switch m.Name {
		case "JSHeapUsedSize":
			heap = m.Value
		case "Nodes":
			nodes = m.Value
		}
	}
	return heap, nodes
}

// rss is the resident memory of chromium and all its processes.
func (b *browser) rss() int64 {
	c := chromedp.FromContext(b.ctx)
	if c == nil || c.Browser == nil {
		return 0
	}
	root := c.Browser.Process()
	if root == nil {
		return 0
	}
	return treeRSS(root.Pid)
}

// treeRSS adds up VmRSS of pid and its descendants, in bytes.
func treeRSS(pid int) int64 {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		if _, ppid, err := parseStat(stat); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var total int64
	var walk func(int)
	walk = func(p int) {
		total += statusKiB(p, "VmRSS:") << 10
		for _, c := range children[p] {
			walk(c)
		}
	}
	walk(pid)
	return total
}

func statusKiB(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '-'
		}
		return r
	}, s)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// freeAddr returns a loopback address with a port free right now, for a
// vigil that must come back on the same admin address after a restart.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ---- a fleet whose endpoints flip one by one -------------------------

const (
	flipFleetEnv      = "VIGIL_BROWSER_FLEET"
	flipFleetCountEnv = "VIGIL_BROWSER_FLEET_COUNT"
	flipFleetBlockEnv = "VIGIL_BROWSER_FLEET_BLOCK"
)

func init() {
	if os.Getenv(flipFleetEnv) == "" {
		return
	}
	if err := runFlipFleet(); err != nil {
		fmt.Fprintf(os.Stderr, "flip fleet: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// flipHealth is a grpc.health.v1 server whose status is per local
// address: one grpc.Server serves many listeners, and each listener's
// address is an endpoint of its own.
type flipHealth struct {
	healthpb.UnimplementedHealthServer
	mu       sync.Mutex
	status   map[string]healthpb.HealthCheckResponse_ServingStatus
	watchers map[string]map[chan struct{}]bool
}

func (h *flipHealth) addr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.LocalAddr != nil {
		return p.LocalAddr.String()
	}
	return ""
}

func (h *flipHealth) get(addr string) healthpb.HealthCheckResponse_ServingStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s, ok := h.status[addr]; ok {
		return s
	}
	return healthpb.HealthCheckResponse_SERVING
}

func (h *flipHealth) set(addr string, s healthpb.HealthCheckResponse_ServingStatus) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[addr] = s
	for ch := range h.watchers[addr] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (h *flipHealth) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return &healthpb.HealthCheckResponse{Status: h.get(h.addr(ctx))}, nil
}

func (h *flipHealth) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	addr := h.addr(stream.Context())
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	if h.watchers[addr] == nil {
		h.watchers[addr] = map[chan struct{}]bool{}
	}
	h.watchers[addr][ch] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.watchers[addr], ch)
		h.mu.Unlock()
	}()
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	for {
		if s := h.get(addr); s != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: s}); err != nil {
				return err
			}
			last = s
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		}
	}
}

// runFlipFleet serves count endpoints on 127.0.BLOCK.x (ports 21000+),
// prints their addresses and "ready", then reads commands from stdin:
// "set ADDR SERVING|NOT_SERVING" and "flap N PERIOD" (flip the first N
// endpoints every PERIOD, each at its own phase; "flap 0 0" stops). It
// exits when stdin closes.
func runFlipFleet() error {
	count, err := strconv.Atoi(os.Getenv(flipFleetCountEnv))
	if err != nil || count <= 0 || count > fleetMaxPerProcess {
		return fmt.Errorf("bad %s", flipFleetCountEnv)
	}
	block, err := strconv.Atoi(os.Getenv(flipFleetBlockEnv))
	if err != nil || block < 0 || block > 200 {
		return fmt.Errorf("bad %s", flipFleetBlockEnv)
	}
	raiseFileLimit()
	h := &flipHealth{status: map[string]healthpb.HealthCheckResponse_ServingStatus{}, watchers: map[string]map[chan struct{}]bool{}}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	var listeners []net.Listener
	var addrs []string
	out := bufio.NewWriter(os.Stdout)
	for j := 0; len(listeners) < count; j++ {
		host := j / fleetPortsPerAddress
		if host >= 250 {
			return fmt.Errorf("found only %d free addresses", len(listeners))
		}
		addr := fmt.Sprintf("127.0.%d.%d:%d", 10+block, 1+host, fleetBasePort+j%fleetPortsPerAddress)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		listeners = append(listeners, ln)
		addrs = append(addrs, addr)
		fmt.Fprintln(out, addr)
	}
	var wg sync.WaitGroup
	for _, ln := range listeners {
		wg.Go(func() { _ = srv.Serve(ln) })
	}
	fmt.Fprintln(out, "ready")
	if err := out.Flush(); err != nil {
		return err
	}
	var flapStop chan struct{}
	var flapWG sync.WaitGroup
	stopFlap := func() {
		if flapStop != nil {
			close(flapStop)
			flapWG.Wait()
			flapStop = nil
		}
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "set":
			h.set(f[1], healthpb.HealthCheckResponse_ServingStatus(healthpb.HealthCheckResponse_ServingStatus_value[f[2]]))
		case len(f) == 3 && f[0] == "flap":
			stopFlap()
			n, _ := strconv.Atoi(f[1])
			period, _ := time.ParseDuration(f[2])
			if n <= 0 || period <= 0 {
				continue
			}
			flapStop = make(chan struct{})
			stop := flapStop
			flapWG.Go(func() {
				// Each endpoint flips once per period, spread evenly.
				tick := time.NewTicker(period / time.Duration(n))
				defer tick.Stop()
				for i := 0; ; i++ {
					select {
					case <-stop:
						for _, a := range addrs[:min(n, len(addrs))] {
							h.set(a, healthpb.HealthCheckResponse_SERVING)
						}
						return
					case <-tick.C:
					}
					a := addrs[i%min(n, len(addrs))]
					if h.get(a) == healthpb.HealthCheckResponse_SERVING {
						h.set(a, healthpb.HealthCheckResponse_NOT_SERVING)
					} else {
						h.set(a, healthpb.HealthCheckResponse_SERVING)
					}
				}
			})
		}
	}
	stopFlap()
	srv.Stop()
	wg.Wait()
	return nil
}

// startFlipHelper runs this test binary as a flip fleet (startHelper's
// modes are the benchmarks').
func startFlipHelper(tb testing.TB, env ...string) *helperProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), flipFleetEnv+"=1"), env...)
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
		tb.Fatalf("start flip fleet: %v", err)
	}
	h := &helperProc{cmd: cmd, stdin: stdin, lines: bufio.NewScanner(stdout), done: make(chan struct{})}
	tb.Cleanup(func() { h.stop(tb) })
	return h
}

// flipFleet is a running flip fleet (one or more helper processes).
type flipFleet struct {
	addrs   []string
	helpers []*helperProc
	owner   map[string]*helperProc
}

func startFlipFleet(tb testing.TB, count, firstBlock int) *flipFleet {
	tb.Helper()
	f := &flipFleet{owner: map[string]*helperProc{}}
	for block := firstBlock; len(f.addrs) < count; block++ {
		n := min(fleetMaxPerProcess, count-len(f.addrs))
		h := startFlipHelper(tb, fmt.Sprintf("%s=%d", flipFleetCountEnv, n), fmt.Sprintf("%s=%d", flipFleetBlockEnv, block))
		for {
			line := h.line(tb)
			if line == "ready" {
				break
			}
			f.addrs = append(f.addrs, line)
			f.owner[line] = h
		}
		f.helpers = append(f.helpers, h)
	}
	return f
}

func (f *flipFleet) set(tb testing.TB, addr string, serving bool) {
	tb.Helper()
	st := "SERVING"
	if !serving {
		st = "NOT_SERVING"
	}
	if _, err := fmt.Fprintf(f.owner[addr].stdin, "set %s %s\n", addr, st); err != nil {
		tb.Fatalf("flip %s: %v", addr, err)
	}
}

// flap makes the first n endpoints of the first helper flip every period
// (n 0 stops it).
func (f *flipFleet) flap(tb testing.TB, n int, period time.Duration) {
	tb.Helper()
	if _, err := fmt.Fprintf(f.helpers[0].stdin, "flap %d %s\n", n, period); err != nil {
		tb.Fatalf("flap: %v", err)
	}
}

// xssBackend answers every health Check with an INTERNAL status whose
// message is markup.
type xssHealth struct {
	healthpb.UnimplementedHealthServer
	msg string
}

func (h *xssHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return nil, status.Error(codes.Internal, h.msg)
}

func startXSSBackend(t testing.TB, msg string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, &xssHealth{msg: msg})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return ln.Addr().String()
}

func chromedpNavigateBlank() chromedp.Action[chromedp.Void] { return chromedp.Navigate("about:blank") }
