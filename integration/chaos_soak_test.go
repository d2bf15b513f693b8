//go:build soak

package integration

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/internal/state"
)

// The soak is a test behind the soak build tag, run by `make soak`
// (DURATION=10m by default): it reuses the chaos suite's harness (fault
// fronts, tagged load, vigil measured from outside) rather than duplicating
// it in a program of its own, and `go test` gives it the integration
// package's binaries, cleanup and failure reporting for free. make soak
// builds vigil without the race detector (SOAK_RACE=1 keeps it), so that the
// memory figures are those of the real binary.
var (
	soakDuration = flag.Duration("soak.duration", 10*time.Minute, "how long TestSoak runs")
	soakSeed     = flag.Uint64("soak.seed", 0, "seed of the fault schedule; 0 picks one (it is logged)")
)

// soakHealth is the soak cluster's health check.
const soakHealth = "mode: check\ninterval: 500ms\ntimeout: 500ms\njitter: 10%\nunhealthy_threshold: 3\nhealthy_threshold: 2"

// soakCallTimeout is the load's deadline per call: generous, so that what
// the soak counts as failed is failed, not late on a busy machine.
const soakCallTimeout = 10 * time.Second

// soakEndpoint is one endpoint of the soak cluster and its fault history.
type soakEndpoint struct {
	name  string
	addr  string
	front *faultFront   // in front of be; nil for a process
	be    *chaosBackend // nil for a process
	proc  *demoBackend  // a demo-backend process (SIGKILL), or nil

	fault    string // the fault in force, "" if none
	healAt   time.Time
	disarmAt time.Time
	faults   []soakFault
	// next is a fault chosen and not injected yet: a front is armed (notes
	// the RPCs it sees) a call timeout before its fault, so that every call
	// in flight when the fault strikes has been noted.
	next   string
	nextAt time.Time
}

type soakFault struct {
	kind     string
	from, to time.Time // to is zero while in force
}

// soakFaults are what can go wrong with an in-process backend behind a
// front; a process backend is killed.
var soakFaults = []string{"blackhole", "restart-blackhole", "http1", "garbage", "reset", "slow", "flap", "not-serving"}

func (e *soakEndpoint) inject(t *testing.T, kind string) {
	switch kind {
	case "blackhole":
		e.front.setMode(modeBlackhole)
	case "restart-blackhole":
		e.front.setMode(modeRestartBlackhole)
	case "http1":
		e.front.setMode(modeHTTP1)
	case "garbage":
		e.front.setMode(modeGarbage)
	case "reset":
		e.front.setMode(modeReset)
	case "slow":
		e.be.delay.Store(int64(15 * time.Second))
	case "flap":
		e.be.flap(10 * time.Millisecond)
	case "not-serving":
		e.be.serving(false)
	case "sigkill":
		e.proc.kill()
	}
}

func (e *soakEndpoint) heal(t *testing.T) {
	switch e.fault {
	case "slow":
		e.be.delay.Store(0)
	case "flap":
		e.be.flap(0)
	case "not-serving":
		e.be.serving(true)
	case "sigkill":
		e.proc = soakRestart(t, e.name, e.addr)
	default:
		e.front.setMode(modePass)
	}
}

// soakRestart starts demo-backend id again on addr, retrying while the port
// is still held by the kernel.
func soakRestart(t *testing.T, id, addr string) *demoBackend {
	t.Helper()
	var lastErr error
	for range 100 {
		cmd := exec.Command(bin("demo-backend"), "-addr", addr, "-print-addr", "-id", id)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewReader(stdout)
		first, err := lines.ReadString('\n')
		if err != nil || !strings.HasPrefix(first, "listening ") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			lastErr = fmt.Errorf("printed %q: %v", first, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		d := &demoBackend{addr: addr, cmd: cmd, done: make(chan struct{})}
		go func() {
			_, _ = io.Copy(io.Discard, lines)
			_ = cmd.Wait()
			close(d.done)
		}()
		t.Cleanup(d.kill)
		return d
	}
	t.Fatalf("restart demo-backend %s on %s: %v", id, addr, lastErr)
	return nil
}

// soakSample is one look at vigil under load.
type soakSample struct {
	at     time.Duration
	s      chaosSample
	calls  int
	faults []string
}

// TestSoak runs a steady mixed load through vigil for -soak.duration while
// backends fail at random (every way the chaos suite knows, SIGKILL and
// restart included, at most two at a time) and the configuration is
// reloaded (an endpoint added and removed, weights, the policy). It reports
// the calls served and failed, evictions and readmissions, and vigil's
// memory and goroutines over time, and fails if a call failed that never
// reached a faulty endpoint, or if vigil's goroutines or heap at rest end
// above where they started.
func TestSoak(t *testing.T) {
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t.Logf("soak: %v, seed %d (-soak.seed to replay the schedule)", *soakDuration, seed)

	var eps []*soakEndpoint
	for i := 1; i <= 5; i++ {
		b := startChaosBackend(t, fmt.Sprintf("b%d", i))
		f := startFaultFront(t, b.addr)
		f.quiet.Store(true)
		eps = append(eps, &soakEndpoint{name: b.id, addr: f.addr, front: f, be: b})
	}
	for i := 1; i <= 2; i++ {
		d := startDemoBackend(t, fmt.Sprintf("d%d", i))
		eps = append(eps, &soakEndpoint{name: fmt.Sprintf("d%d", i), addr: d.addr, proc: d})
	}
	spare := startChaosBackend(t, "spare")
	addrs := func() []string {
		out := make([]string, len(eps))
		for i, e := range eps {
			out[i] = e.addr
		}
		return out
	}
	base := yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo"}, {Name: "tcp", Protocol: "tcp", Cluster: "demo"}},
		Clusters:  []yamlCluster{{Name: "demo", Panic: 50, Endpoints: addrs(), Health: soakHealth}},
	}
	render := func(c yamlConfig) string {
		// Info, not debug: ten minutes of gRPC's debug logs are not the point.
		return strings.Replace(c.String(), "level: debug", "level: info", 1)
	}
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	if err := os.WriteFile(path, []byte(render(base)), 0o644); err != nil {
		t.Fatal(err)
	}
	v := startVigilEnv(t, path)
	admin := "http://" + v.adminAddr()
	for _, e := range eps {
		v.wait(30*time.Second, 0, match("endpoint admitted", "endpoint", e.addr), "admitted "+e.name)
	}
	load := newChaosLoad(t, loadSpec{grpcAddr: v.listener("api"), tcpAddr: v.listener("tcp"), unary: 8, streams: 4, tcp: 2}, soakCallTimeout)
	// Warm up: buffers and pools grow to what steady load needs.
	load.start()
	for _, e := range eps {
		load.waitServed(t, 30*time.Second, e.name, 0)
	}
	time.Sleep(min(30*time.Second, *soakDuration/10))
	load.pause()
	// vigil keeps the last state.DefaultEventsKept eviction-log events for
	// /events replay: fill that ring first (a SIGHUP reload is one event),
	// so that the baseline holds it as the end will.
	for range state.DefaultEventsKept + 10 {
		from := v.mark()
		v.signal(syscall.SIGHUP)
		v.wait(30*time.Second, from, match("config reloaded"), "SIGHUP reload")
	}
	baseline := chaosBaseline(t, v, admin)
	load.start()

	start := time.Now()
	deadline := start.Add(*soakDuration)
	faultTick := time.NewTicker(3 * time.Second)
	defer faultTick.Stop()
	reloadTick := time.NewTicker(20 * time.Second)
	defer reloadTick.Stop()
	sampleTick := time.NewTicker(max(*soakDuration/40, 5*time.Second))
	defer sampleTick.Stop()
	injected := map[string]int{}
	reloads := 0
	var samples []soakSample
	active := func() []string {
		var out []string
		for _, e := range eps {
			if e.fault != "" {
				out = append(out, e.name+":"+e.fault)
			}
		}
		return out
	}
	busy := func() int {
		n := 0
		for _, e := range eps {
			if e.fault != "" || e.next != "" {
				n++
			}
		}
		return n
	}

	for now := time.Now(); now.Before(deadline); now = time.Now() {
		select {
		case <-faultTick.C:
			for _, e := range eps {
				if e.fault != "" && now.After(e.healAt) {
					e.heal(t)
					e.faults[len(e.faults)-1].to = now
					e.fault = ""
					e.disarmAt = now.Add(5 * time.Second)
				}
				if e.next != "" && !now.Before(e.nextAt) {
					e.inject(t, e.next)
					e.fault, e.next = e.next, ""
					e.healAt = now.Add(time.Duration(3+rng.IntN(10)) * time.Second)
					e.faults = append(e.faults, soakFault{kind: e.fault, from: now})
					injected[e.fault]++
				}
				if e.front != nil && e.fault == "" && e.next == "" && now.After(e.disarmAt) {
					e.front.armed.Store(false)
				}
			}
			if busy() >= 2 || rng.Float64() < 0.3 {
				continue
			}
			e := eps[rng.IntN(len(eps))]
			if e.fault != "" || e.next != "" {
				continue
			}
			e.next, e.nextAt = "sigkill", now
			if e.front != nil {
				e.next = soakFaults[rng.IntN(len(soakFaults))]
				e.nextAt = now.Add(soakCallTimeout + time.Second)
				e.front.armed.Store(true)
			}
		case <-reloadTick.C:
			cfg := base
			cfg.Clusters = slices.Clone(base.Clusters)
			c := &cfg.Clusters[0]
			c.Endpoints = addrs()
			if rng.IntN(2) == 0 {
				c.Endpoints = append(c.Endpoints, spare.addr)
			}
			c.Weights = make([]int, len(c.Endpoints))
			for i := range c.Weights {
				c.Weights[i] = 1 + rng.IntN(5)
			}
			c.Policy = []string{"round_robin", "least_request", "random"}[rng.IntN(3)]
			v.rewrite(render(cfg))
			reloads++
		case <-sampleTick.C:
			s, err := chaosTryMeasure(v, admin)
			if err != nil {
				t.Fatalf("measure vigil: %v", err)
			}
			samples = append(samples, soakSample{at: now.Sub(start), s: s, calls: soakCalls(load), faults: active()})
		case <-v.done:
			t.Fatalf("vigil exited during the soak: %v\n%s", v.exit, v.logs.dump())
		}
	}

	// Wind down: heal everything, back to the first configuration, every
	// endpoint serving again, then vigil at rest against its baseline.
	now := time.Now()
	for _, e := range eps {
		if e.fault != "" {
			e.heal(t)
			e.faults[len(e.faults)-1].to = now
			e.fault = ""
		}
	}
	v.rewrite(render(base))
	eventually(t, 60*time.Second, func() bool {
		cl := clusters(t, admin)["clusters"].([]any)[0].(map[string]any)
		if len(cl["endpoints"].([]any)) != len(eps) {
			return false
		}
		for _, e := range cl["endpoints"].([]any) {
			if e.(map[string]any)["health"] != "healthy" {
				return false
			}
		}
		return true
	}, "every endpoint healthy again in the first configuration")
	served := load.served()
	for _, e := range eps {
		load.waitServed(t, 60*time.Second, e.name, served[e.name])
	}
	load.pause()
	elapsed := time.Since(start)
	end := chaosRequireBaseline(t, v, admin, baseline, "at the end of the soak")

	// Judge every failed call: it may fail if it overlapped a fault of an
	// endpoint it reached (its headers seen by that endpoint's front, or
	// vigil's error naming the endpoint), or if it went through the tcp
	// listener while an endpoint was faulty (vigil balances connections
	// there and cannot tell a garbage-speaking backend from a good one
	// until the probes do).
	reached := map[*soakEndpoint]map[string]bool{}
	for _, e := range eps {
		if e.front != nil {
			reached[e] = e.front.reachedIDs()
		}
	}
	verdict := load.verdict(func(f chaosFailure) bool {
		callEnd := f.Start.Add(soakCallTimeout + time.Second)
		for _, e := range eps {
			for _, fl := range e.faults {
				to := fl.to
				if to.IsZero() {
					to = time.Now()
				}
				if f.Start.After(to.Add(5*time.Second)) || callEnd.Before(fl.from) {
					continue
				}
				if reached[e][f.ID] || strings.Contains(f.Err.Error(), e.addr) || f.Kind == "tcp" {
					return true
				}
			}
		}
		return false
	})

	evictions, _ := chaosScrapeSeries(admin, "vigil_evictions_total")
	readmissions, _ := chaosScrapeSeries(admin, "vigil_readmissions_total")
	reloadsTotal, _ := chaosScrapeSeries(admin, "vigil_config_reloads_total")
	sum := func(m map[string]float64) int {
		n := 0.0
		for _, v := range m {
			n += v
		}
		return int(n)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "SOAK REPORT (%v, seed %d, vigil %s)\n", elapsed.Round(time.Second), seed, map[bool]string{true: "without the race detector", false: "with the race detector"}[os.Getenv("VIGIL_INTEGRATION_NORACE") != ""])
	total := 0
	for _, c := range verdict.OK {
		total += c
	}
	fmt.Fprintf(&b, "  calls served: %d (%s); %.0f/s\n", total, soakKinds(verdict.OK), float64(total)/elapsed.Seconds())
	fmt.Fprintf(&b, "  calls failed: %d having reached a faulty endpoint, %d that should not have\n", len(verdict.Reached), len(verdict.Unexplained))
	fmt.Fprintf(&b, "  faults injected: %d (%s)\n", sum(intsToFloats(injected)), soakKinds(injected))
	fmt.Fprintf(&b, "  evictions: %d (%s); readmissions: %d\n", sum(evictions), soakSeries(evictions), sum(readmissions))
	fmt.Fprintf(&b, "  reloads written: %d; vigil_config_reloads_total %s\n", reloads, soakSeries(reloadsTotal))
	maxG, maxHeap := 0, int64(0)
	for _, s := range samples {
		maxG, maxHeap = max(maxG, s.s.Goroutines), max(maxHeap, s.s.HeapAlloc)
	}
	fmt.Fprintf(&b, "  vigil at rest: start %v\n                end   %v\n", baseline, end)
	fmt.Fprintf(&b, "  vigil under load: max RSS (VmHWM) %.1f MiB, max goroutines %d, max heap %.1f MiB\n", mib(end.HWM), maxG, mib(maxHeap))
	fmt.Fprintf(&b, "  %8s %10s %9s %9s %10s  %s\n", "time", "goroutines", "heap MiB", "RSS MiB", "calls", "faults in force")
	for _, s := range samples {
		fmt.Fprintf(&b, "  %8v %10d %9.1f %9.1f %10d  %s\n", s.at.Round(time.Second), s.s.Goroutines, mib(s.s.HeapAlloc), mib(s.s.RSS), s.calls, strings.Join(s.faults, " "))
	}
	t.Log("\n" + b.String())
	verdict.requireNoUnexplained(t, "soak")
}

func soakKinds(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func soakSeries(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("{%s} %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func intsToFloats(m map[string]int) map[string]float64 {
	out := make(map[string]float64, len(m))
	for k, v := range m {
		out[k] = float64(v)
	}
	return out
}

// soakCalls is the number of calls the load made successfully so far.
func soakCalls(l *chaosLoad) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.ok {
		n += c
	}
	return n
}
