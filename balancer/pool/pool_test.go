package pool

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	_ "github.com/vigil-proxy/vigil/balancer/policies"
	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// none is a health check that never probes: every endpoint is admitted as
// it is added, and the tests make its other changes themselves.
func none() checker.Config {
	cfg := checker.DefaultConfig()
	cfg.Mode = checker.ModeNone
	return cfg
}

func endpoints(addrs ...string) []Endpoint {
	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Address: a, Weight: 1}
	}
	return eps
}

// recorder is a sink that keeps every event.
type recorder struct {
	mu     sync.Mutex
	events []event.Event
}

func (r *recorder) Handle(events []event.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, events...)
}

func (r *recorder) count(kind event.Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// jsonLog collects JSON log records.
type jsonLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// read and counted are how far count has read, and what it found.
	read    int
	counted map[string]int
}

// count returns how many records with msg were logged so far, reading
// only what is new since the last call.
func (l *jsonLog) count(t testing.TB, msg string) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.counted == nil {
		l.counted = map[string]int{}
	}
	for _, line := range strings.Split(string(l.buf.Bytes()[l.read:]), "\n") {
		if line == "" {
			continue
		}
		var rec struct{ Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		l.counted[rec.Msg]++
	}
	l.read = l.buf.Len()
	return l.counted[msg]
}

func (l *jsonLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *jsonLog) records(t testing.TB, msg string) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if msg == "" || rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// transition is the Change a checker reports when an endpoint goes from
// old to st.
func transition(addr string, old, st checker.Status) checker.Change {
	tr := checker.NoTransition
	switch {
	case old.Health == checker.Pending && st.Health == checker.Healthy:
		tr = checker.Admitted
	case old.Health != checker.Unhealthy && st.Health == checker.Unhealthy:
		tr = checker.Evicted
	case old.Health == checker.Unhealthy && st.Health == checker.Healthy:
		tr = checker.Readmitted
	}
	return checker.Change{Address: addr, Old: old, New: st, Transition: tr, Mode: checker.ModeNone}
}

var (
	healthy    = checker.Status{Health: checker.Healthy}
	notServing = checker.Status{Health: checker.Unhealthy, Reason: "NOT_SERVING", Cause: checker.CauseAnswer, Failures: 1}
	refused    = checker.Status{Health: checker.Unhealthy, Reason: "UNAVAILABLE", Cause: checker.CauseTransport, Failures: 3}
)

func (p *Pool) statusOf(addr string) checker.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.members[addr].status
}

// setHealth makes the endpoint's health st, as a probe result would.
func (p *Pool) setHealth(addr string, st checker.Status) {
	p.changed(transition(addr, p.statusOf(addr), st))
}

// build makes the build the builder would make.
func (p *Pool) build() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buildLocked()
	p.checkReadyLocked()
	p.flushLocked()
}

func picks(p *Pool, n int) map[string]int {
	seen := map[string]int{}
	for range n {
		if e := p.Cluster().Pick(); e != nil {
			seen[e.Address()]++
		} else {
			seen[""]++
		}
	}
	return seen
}

// TestReadmittedBeforeBuildIsPicked is the defect of the first wave: an
// endpoint evicted and then readmitted before the builder ran stayed out
// of every pick for good (the build found the members unchanged and kept
// the picker, whose exclusion of the endpoint only a build would clear).
// Whether an endpoint may be picked is now a function of its health,
// recomputed with every change, so no build is needed either way.
func TestReadmittedBeforeBuildIsPicked(t *testing.T) {
	p := newPool("c", Options{}, false)
	t.Cleanup(p.Close)
	p.Apply(Spec{HealthCheck: none(), Endpoints: endpoints("10.0.0.1:1", "10.0.0.2:1")})
	p.build()
	if got := picks(p, 100); got["10.0.0.1:1"] == 0 || got["10.0.0.2:1"] == 0 {
		t.Fatalf("picks before the flap: %v", got)
	}

	p.setHealth("10.0.0.1:1", notServing)
	if got := picks(p, 100); got["10.0.0.1:1"] != 0 {
		t.Fatalf("the evicted endpoint was picked before any build: %v", got)
	}
	p.setHealth("10.0.0.1:1", healthy)
	if got := picks(p, 100); got["10.0.0.1:1"] == 0 {
		t.Fatalf("the readmitted endpoint got none of 100 picks before the build: %v", got)
	}
	p.build() // finds nothing to change: the picker in force has both
	if got := picks(p, 100); got["10.0.0.1:1"] == 0 {
		t.Fatalf("the readmitted endpoint got none of 100 picks after the build: %v", got)
	}
}

// TestPoolProperty drives a pool through random transitions, reloads,
// discoveries and drains. After every step an endpoint may be picked
// exactly when its health says so (healthy, or panic-eligible in panic),
// at once; after a build the picker holds exactly those; and the store
// (what /clusters serves), the metrics and the eviction log agree with
// the pool.
func TestPoolProperty(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	steps := 400
	if testing.Short() {
		seeds, steps = seeds[:2], 100
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { runProperty(t, seed, steps) })
	}
}

func runProperty(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed))
	store, err := state.New()
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Options{Store: store})
	var log jsonLog
	rec := &recorder{}
	p := newPool("c", Options{Sinks: []event.Sink{store, m, rec, LogSink(slog.New(slog.NewJSONHandler(&log, nil)))}}, false)
	t.Cleanup(p.Close)

	universe := []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.4:1", "10.0.0.5:1", "10.0.0.6:1", "10.0.0.7:1"}
	subset := func() []Endpoint {
		var eps []Endpoint
		for _, a := range universe {
			if rng.IntN(3) > 0 {
				eps = append(eps, Endpoint{Address: a, Weight: uint32(1 + rng.IntN(3))})
			}
		}
		return eps
	}
	policies := balancer.Policies()
	outliers := func() *outlier.Config {
		if rng.IntN(4) == 0 {
			return nil // off: every ejection ends
		}
		c := outlier.DefaultConfig()
		c.ConsecutiveFailures = 1 + rng.IntN(3)
		c.Interval = time.Duration(1+rng.IntN(3)) * time.Second
		c.BaseEjectionTime = time.Duration(1+rng.IntN(3)) * time.Second
		c.MaxEjectionPercent = []int{0, 10, 50, 100}[rng.IntN(4)]
		c.FailurePercentage = []int{0, 50}[rng.IntN(2)]
		c.MinimumRequests = 2
		return &c
	}
	spec := func() Spec {
		pol, _ := balancer.PolicyByName(policies[rng.IntN(len(policies))])
		return Spec{Policy: pol, PanicThreshold: []int{0, 50, 80}[rng.IntN(3)], HealthCheck: none(),
			Endpoints: subset(), DrainTimeout: time.Hour, Outlier: outliers()}
	}
	// The outlier goroutine's work is done by the test, on a clock of its
	// own.
	now := time.Now()
	review := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.reviewOutliersLocked(now)
	}
	// An endpoint counts one request in flight from its start, so that its
	// drain ends only when the test says (the op "drains end"), never by
	// itself in the middle of a check.
	held := map[*balancer.Endpoint]bool{}
	hold := func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, m := range p.members {
			if !held[m.ep] {
				held[m.ep] = true
				m.ep.Acquire()
			}
		}
	}
	p.Apply(spec())
	hold()
	p.build()

	for step := range steps {
		var did string
		switch op := rng.IntN(14); {
		case op >= 10 && op < 12: // traffic to a random endpoint fails (or not)
			live := liveMembers(p)
			if len(live) == 0 {
				continue
			}
			addr := live[rng.IntN(len(live))]
			code := []codes.Code{codes.Unavailable, codes.Internal, codes.OK, codes.Canceled}[rng.IntN(4)]
			n := 1 + rng.IntN(4)
			did = fmt.Sprintf("%s: %d x %v", addr, n, code)
			p.mu.Lock()
			ep := p.members[addr].ep
			p.mu.Unlock()
			for range n {
				ep.Report(code)
			}
			review()
		case op >= 12: // time passes: intervals end, ejections end
			d := time.Duration(rng.IntN(3000)) * time.Millisecond
			did = fmt.Sprintf("%v pass", d)
			now = now.Add(d)
			review()
		case op < 6: // a health change of a random endpoint
			live := liveMembers(p)
			if len(live) == 0 {
				continue
			}
			addr := live[rng.IntN(len(live))]
			st := []checker.Status{healthy, notServing, refused, {Health: checker.Healthy, Successes: 1}}[rng.IntN(4)]
			if p.statusOf(addr).Health == checker.Pending && st.Health == checker.Unhealthy && rng.IntN(2) == 0 {
				st = checker.Status{Health: checker.Pending, Failures: 1} // a failure below the threshold
			}
			did = fmt.Sprintf("%s -> %v/%s", addr, st.Health, st.Reason)
			p.setHealth(addr, st)
		case op < 8:
			did = "reload"
			p.Apply(spec())
		case op < 9:
			did = "discovery"
			p.SetDiscovered(SourceDNS, subset())
		default:
			did = "drains end"
			for _, m := range drainingMembers(p) {
				p.finishDrain(m)
			}
		}
		hold()
		checkExclusion(t, p, step, did)
		if rng.IntN(2) == 0 {
			p.build()
			checkPicker(t, p, step, did)
		}
		// The events of a change that needs a build wait for it; whenever
		// none waits, the sinks agree with the pool.
		p.mu.Lock()
		waiting := p.stale
		p.mu.Unlock()
		if !waiting {
			checkAgreement(t, p, store, m, rec, &log, step, did)
		}
	}
	ejections, ends := 0, 0
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		if ev.Outlier && ev.Kind == event.EndpointEvicted {
			ejections++
		} else if ev.Outlier {
			ends++
		}
	}
	if ejections == 0 || ends == 0 {
		t.Errorf("%d ejections and %d readmissions after one: the walk did not try outlier detection", ejections, ends)
	}
	t.Logf("%d ejections, %d readmissions at their end", ejections, ends)
}

func liveMembers(p *Pool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for a, m := range p.members {
		if !m.draining {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

func drainingMembers(p *Pool) []*member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*member
	for _, m := range p.members {
		if m.draining {
			out = append(out, m)
		}
	}
	return out
}

// checkExclusion: at every moment, without waiting for a build, exactly
// the endpoints whose health allows it may be picked, and the counts and
// panic mode are what the endpoints say.
func checkExclusion(t *testing.T, p *Pool, step int, did string) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	var healthy, judged, total, ejected int
	for _, m := range p.members {
		if m.draining {
			if m.ej.Ejected {
				t.Fatalf("step %d (%s): draining %s is ejected", step, did, m.address)
			}
			continue
		}
		total++
		if m.ej.Ejected {
			ejected++
		}
		if m.status.Health == checker.Healthy && !m.ej.Ejected {
			healthy++
		}
		if m.status.Health != checker.Pending {
			judged++
		}
	}
	if healthy != p.healthy || judged != p.judged || total != p.total || ejected != p.ejected {
		t.Fatalf("step %d (%s): counts %d/%d/%d/%d ejected, want %d/%d/%d/%d", step, did, p.healthy, p.judged, p.total, p.ejected,
			healthy, judged, total, ejected)
	}
	if p.spec.Outlier == nil && ejected > 0 {
		t.Fatalf("step %d (%s): %d ejected with outlier detection off", step, did, ejected)
	}
	if want := balancer.PanicMode(p.spec.PanicThreshold, healthy, judged); p.panic != want {
		t.Fatalf("step %d (%s): panic %v, want %v", step, did, p.panic, want)
	}
	for a, m := range p.members {
		want := !m.draining && (m.status.Health == checker.Healthy || p.panic && m.status.PanicEligible())
		if m.ej.Ejected {
			want = !m.draining && p.panic // ejected: a transport-like cause
		}
		if m.ep.Excluded() == want {
			t.Fatalf("step %d (%s): %s (%v, draining %v, panic %v) excluded=%v", step, did, a, m.status, m.draining, p.panic, m.ep.Excluded())
		}
	}
	snap := p.bal.Snapshot()
	for range 50 {
		if e := snap.Pick(); e != nil && e.Excluded() {
			t.Fatalf("step %d (%s): picked %s, which may not be picked", step, did, e.Address())
		}
	}
}

// checkPicker: after a build, the picker chooses among exactly the
// endpoints that may be picked.
func checkPicker(t *testing.T, p *Pool, step int, did string) {
	t.Helper()
	p.mu.Lock()
	var want []string
	for a, m := range p.members {
		if p.routableLocked(m) {
			want = append(want, a)
		}
	}
	p.mu.Unlock()
	slices.Sort(want)
	snap := p.bal.Snapshot()
	var got []string
	for _, w := range snap.Routable {
		got = append(got, w.Endpoint.Address())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("step %d (%s): picker has %v, want %v", step, did, got, want)
	}
	_, _, panicking := p.Counts()
	if snap.Panic != panicking {
		t.Fatalf("step %d (%s): picker panic %v, pool %v", step, did, snap.Panic, panicking)
	}
	if len(want) > 0 {
		if seen := picks(p, 20*len(want)); seen[""] > 0 {
			t.Fatalf("step %d (%s): nil picks with %v routable", step, did, want)
		}
	}
}

// checkAgreement: the store holds what the pool holds; every eviction is
// counted in vigil_evictions_total and logged as "endpoint evicted".
func checkAgreement(t *testing.T, p *Pool, store *state.Store, m *metrics.Metrics, rec *recorder, log *jsonLog, step int, did string) {
	t.Helper()
	snap := store.Snapshot()
	rows, err := snap.EndpointsByCluster(nil, "c")
	if err != nil {
		t.Fatal(err)
	}
	byAddr := map[string]*state.Endpoint{}
	for _, r := range rows {
		byAddr[r.Address] = r
	}
	eps := p.Endpoints()
	if len(eps) != len(rows) {
		t.Fatalf("step %d (%s): pool has %d endpoints, the store %d", step, did, len(eps), len(rows))
	}
	for _, e := range eps {
		r := byAddr[e.Address]
		if r == nil || r.Status.Health != e.Status.Health || r.Status.Reason != e.Status.Reason || r.Weight != e.Weight || r.Source != string(e.Source) {
			t.Fatalf("step %d (%s): store has %+v for %+v", step, did, r, e)
		}
	}
	cl, _ := snap.Cluster(nil, "c")
	if _, _, panicking := p.Counts(); cl == nil || cl.Panic != panicking {
		t.Fatalf("step %d (%s): store cluster %+v, pool panic %v", step, did, cl, panicking)
	}

	evicted := rec.count(event.EndpointEvicted)
	if n := log.count(t, MsgEvicted); n != evicted {
		t.Fatalf("step %d (%s): %d evicted records for %d evictions", step, did, n, evicted)
	}
	// Every ejection is an eviction of its own, logged with check=outlier.
	ejections := 0
	rec.mu.Lock()
	for _, ev := range rec.events {
		if ev.Kind == event.EndpointEvicted && ev.Outlier {
			ejections++
			if !ev.Ejection.Active() || ev.Ejection.Duration() <= 0 || ev.Status.Health != checker.Unhealthy || !ev.Status.PanicEligible() {
				t.Fatalf("step %d (%s): ejection event %+v", step, did, ev)
			}
		}
	}
	rec.mu.Unlock()
	if step%10 != 0 {
		return
	}
	outlierRecords := 0
	for _, r := range log.records(t, MsgEvicted) {
		if r["check"] == CheckOutlier {
			outlierRecords++
			if r["ejection"] == nil || r["reason"] == "" {
				t.Fatalf("step %d (%s): ejection record %v", step, did, r)
			}
		}
	}
	if outlierRecords != ejections {
		t.Fatalf("step %d (%s): %d check=outlier records for %d ejections", step, did, outlierRecords, ejections)
	}
	fams, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, f := range fams {
		if f.GetName() == "vigil_evictions_total" {
			for _, s := range f.GetMetric() {
				counted += s.GetCounter().GetValue()
			}
		}
	}
	if int(counted) != evicted {
		t.Fatalf("step %d (%s): vigil_evictions_total %v for %d evictions", step, did, counted, evicted)
	}
}

// TestSetDiscovered: a source's set joins the listed endpoints (a listed
// address keeps its weight and source), the same set again changes
// nothing, and what a source no longer reports drains.
func TestSetDiscovered(t *testing.T) {
	rec := &recorder{}
	p := newPool("c", Options{Sinks: []event.Sink{rec}}, false)
	t.Cleanup(p.Close)
	p.Apply(Spec{HealthCheck: none(), Endpoints: []Endpoint{{Address: "10.0.0.1:1", Weight: 3}}, DrainTimeout: time.Hour})
	plan := p.SetDiscovered(SourceDNS, []Endpoint{{Address: "10.0.0.1:1", Weight: 1}, {Address: "10.0.0.2:1", Weight: 2}})
	if !slices.Equal(plan.Added, []string{"10.0.0.2:1"}) || len(plan.Removed) != 0 {
		t.Fatalf("plan %+v", plan)
	}
	eps := p.Endpoints()
	if len(eps) != 2 || eps[0].Weight != 3 || eps[0].Source != SourceConfig || eps[1].Weight != 2 || eps[1].Source != SourceDNS {
		t.Fatalf("endpoints %+v", eps)
	}
	n := len(rec.events)
	if plan := p.SetDiscovered(SourceDNS, []Endpoint{{Address: "10.0.0.1:1", Weight: 1}, {Address: "10.0.0.2:1", Weight: 2}}); !plan.Empty() || len(rec.events) != n {
		t.Fatalf("the same set again: plan %+v, %d events", plan, len(rec.events)-n)
	}
	plan = p.SetDiscovered(SourceDNS, nil)
	if !slices.Equal(plan.Removed, []string{"10.0.0.2:1"}) {
		t.Fatalf("plan %+v", plan)
	}
	if st := p.statusOf("10.0.0.2:1"); st.Health != checker.Draining {
		t.Fatalf("the endpoint the source dropped is %v, want draining", st.Health)
	}
	if st := p.statusOf("10.0.0.1:1"); st.Health != checker.Healthy {
		t.Fatalf("the listed endpoint is %v", st.Health)
	}
}

// TestEventsAreInForce: when a sink hears of a transition, the picker in
// force already follows it: an admitted or readmitted endpoint is in it,
// an evicted one is never picked.
func TestEventsAreInForce(t *testing.T) {
	var p *Pool
	var bad []string
	check := event.SinkFunc(func(events []event.Event) {
		snap := p.Cluster().Snapshot()
		// A batch may hold several transitions of one endpoint: the last
		// one is what must be in force.
		last := map[string]event.Event{}
		for _, ev := range events {
			if ev.Kind.Transition() {
				last[ev.Address] = ev
			}
		}
		for _, ev := range last {
			in := slices.ContainsFunc(snap.Routable, func(w balancer.Weighted) bool { return w.Endpoint.Address() == ev.Address })
			switch ev.Kind {
			case event.EndpointAdmitted, event.EndpointReadmitted:
				if !in {
					bad = append(bad, fmt.Sprintf("%v of %s before the picker had it", ev.Kind, ev.Address))
				}
			case event.EndpointEvicted:
				for range 20 {
					if e := snap.Pick(); e != nil && e.Address() == ev.Address {
						bad = append(bad, fmt.Sprintf("%s picked after its eviction", ev.Address))
					}
				}
			}
		}
	})
	p = New("c", Options{Sinks: []event.Sink{check}})
	t.Cleanup(p.Close)
	p.Apply(Spec{HealthCheck: none(), Endpoints: endpoints("10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1")})
	for i := range 50 {
		addr := []string{"10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"}[i%3]
		p.setHealth(addr, notServing)
		if i%2 == 0 {
			// Let the builder drop it, so that the readmission needs a build.
			waitFor(t, "a picker without "+addr, func() bool {
				return !slices.ContainsFunc(p.Cluster().Snapshot().Routable, func(w balancer.Weighted) bool { return w.Endpoint.Address() == addr })
			})
		}
		p.setHealth(addr, healthy)
	}
	waitFor(t, "every endpoint in the picker", func() bool { return len(p.Cluster().Snapshot().Routable) == 3 })
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d events before they were in force, first: %s", len(bad), bad[0])
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWarm: Warm is closed once the picker in force has every endpoint's
// first result, asked again after that it is closed at once, and Close
// releases a waiter.
func TestWarm(t *testing.T) {
	p := newPool("c", Options{}, false)
	t.Cleanup(p.Close)
	p.Apply(Spec{HealthCheck: none(), Endpoints: endpoints("10.0.0.1:1")})
	w := p.Warm()
	p.build()
	select {
	case <-w:
	default:
		t.Fatal("not warm after the build")
	}
	select {
	case <-p.Warm():
	default:
		t.Fatal("a warm pool's Warm is not closed at once")
	}

	q := newPool("d", Options{}, false)
	q.Apply(Spec{HealthCheck: none(), Endpoints: endpoints("10.0.0.2:1")})
	w = q.Warm()
	q.Close()
	select {
	case <-w:
	default:
		t.Fatal("Close left a Warm waiter waiting")
	}
}
