package state

import (
	"log/slog"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func seed(t *testing.T, s *Store) {
	t.Helper()
	err := s.Update(func(w Writer) error {
		for _, c := range []string{"orders", "orders2"} {
			if err := w.UpsertCluster(&Cluster{Name: c, PanicThreshold: 50}); err != nil {
				return err
			}
			for _, a := range []string{"127.0.0.1:1", "127.0.0.1:2"} {
				if err := w.UpsertEndpoint(&Endpoint{Cluster: c, Address: a, Weight: 1}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func fired(ws memdb.WatchSet) bool {
	return !ws.Watch(time.After(10 * time.Millisecond))
}

// status is an EndpointUpdated event that gives an endpoint status st.
func status(cluster, address string, st checker.Status) event.Event {
	return event.Event{Kind: event.EndpointUpdated, Cluster: cluster, Address: address, Weight: 1, Status: st}
}

func TestEndpointWatchIsPerCluster(t *testing.T) {
	s := newStore(t)
	seed(t, s)

	ws := memdb.NewWatchSet()
	eps, err := s.Snapshot().EndpointsByCluster(ws, "orders")
	if err != nil || len(eps) != 2 {
		t.Fatalf("EndpointsByCluster = %v, %v; want 2 endpoints", eps, err)
	}
	before := eps[0]

	// A change in another cluster, whose name has this one's as a prefix,
	// must not wake the watcher.
	s.Handle([]event.Event{status("orders2", "127.0.0.1:1", checker.Status{Health: checker.Healthy})})
	if fired(ws) {
		t.Fatal("watch on orders fired for a change in orders2")
	}

	st := checker.Status{Health: checker.Unhealthy, Reason: "NOT_SERVING", Cause: checker.CauseAnswer, Failures: 1}
	s.Handle([]event.Event{status("orders", "127.0.0.1:1", st)})
	if !fired(ws) {
		t.Fatal("watch on orders did not fire for a status change")
	}
	if before.Status.Health != checker.Pending {
		t.Fatalf("object read before the change was mutated: %v", before.Status)
	}
	got, err := s.Snapshot().Endpoint(nil, "orders", "127.0.0.1:1")
	if err != nil || got.Status != st {
		t.Fatalf("Endpoint = %+v, %v; want status %+v", got, err, st)
	}

	// Writing the same status again changes nothing and wakes nobody.
	ws = memdb.NewWatchSet()
	if _, err := s.Snapshot().EndpointsByCluster(ws, "orders"); err != nil {
		t.Fatal(err)
	}
	s.Handle([]event.Event{status("orders", "127.0.0.1:1", st)})
	if fired(ws) {
		t.Fatal("an unchanged status woke the watcher")
	}
}

func TestHandleLeavesMissingAlone(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	s.Handle([]event.Event{
		status("orders", "127.0.0.1:9", checker.Status{Health: checker.Healthy}),
		{Kind: event.ClusterPanic, Cluster: "missing", Panic: true},
	})
	snap := s.Snapshot()
	if e, _ := snap.Endpoint(nil, "orders", "127.0.0.1:9"); e != nil {
		t.Fatalf("a status event created endpoint %+v", e)
	}
	if c, _ := snap.Cluster(nil, "missing"); c != nil {
		t.Fatalf("a panic event created cluster %+v", c)
	}
}

// TestHandleFollowsALife: the rows are what a cluster's events say, from
// its configuration to its removal.
func TestHandleFollowsALife(t *testing.T) {
	s := newStore(t)
	hc := checker.DefaultConfig()
	settings := &event.Settings{Policy: "round_robin", PanicThreshold: 50, HealthCheck: hc}
	healthy := checker.Status{Health: checker.Healthy}
	ep := func(kind event.Kind, st checker.Status) event.Event {
		return event.Event{Kind: kind, Cluster: "c", Address: "a:1", Weight: 2, Source: "dns", Check: hc.Mode, Status: st}
	}
	row := func() *Endpoint {
		e, _ := s.Snapshot().Endpoint(nil, "c", "a:1")
		return e
	}
	s.Handle([]event.Event{{Kind: event.ClusterConfigured, Cluster: "c", Settings: settings}, ep(event.EndpointAdded, checker.Status{})})
	if c, _ := s.Snapshot().Cluster(nil, "c"); c == nil || c.LBPolicy != "round_robin" || c.HealthCheck != hc {
		t.Fatalf("cluster row %+v", c)
	}
	if e := row(); e == nil || e.Source != "dns" || e.Weight != 2 || e.Status.Health != checker.Pending {
		t.Fatalf("added row %+v", e)
	}
	s.Handle([]event.Event{ep(event.EndpointAdmitted, healthy), {Kind: event.ClusterPanic, Cluster: "c", Panic: true}})
	if e := row(); e.Status != healthy {
		t.Fatalf("admitted row %+v", e)
	}
	if c, _ := s.Snapshot().Cluster(nil, "c"); !c.Panic {
		t.Fatal("panic not recorded")
	}
	watch := hc
	watch.Mode = checker.ModeWatch
	s.Handle([]event.Event{{Kind: event.ClusterConfigured, Cluster: "c", Panic: true, Settings: &event.Settings{Policy: "random", HealthCheck: watch}}})
	if c, _ := s.Snapshot().Cluster(nil, "c"); !c.Panic || c.LBPolicy != "random" {
		t.Fatalf("reconfigured cluster %+v", c)
	}
	if e := row(); e.Check != checker.ModeWatch {
		t.Fatalf("endpoint check %q after the mode changed", e.Check)
	}
	s.Handle([]event.Event{ep(event.EndpointRemoved, checker.Status{Health: checker.Draining})})
	if e := row(); e.Status.Health != checker.Draining {
		t.Fatalf("removed row %+v", e)
	}
	s.Handle([]event.Event{ep(event.EndpointDrained, checker.Status{Health: checker.Draining})})
	if e := row(); e != nil {
		t.Fatalf("drained row %+v", e)
	}
	s.Handle([]event.Event{ep(event.EndpointAdded, checker.Status{}), {Kind: event.ClusterRemoved, Cluster: "c"}})
	if c, _ := s.Snapshot().Cluster(nil, "c"); c != nil || row() != nil {
		t.Fatal("rows left after ClusterRemoved")
	}
}

func TestDeleteClusterDeletesItsEndpoints(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	if err := s.Update(func(w Writer) error { return w.DeleteClusterByName("orders") }); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	if c, _ := snap.Cluster(nil, "orders"); c != nil {
		t.Fatal("cluster still there")
	}
	if eps, _ := snap.EndpointsByCluster(nil, "orders"); len(eps) != 0 {
		t.Fatalf("endpoints left: %v", eps)
	}
	if eps, _ := snap.EndpointsByCluster(nil, "orders2"); len(eps) != 2 {
		t.Fatalf("other cluster lost endpoints: %v", eps)
	}
}

func TestUpdateIsAllOrNothing(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	err := s.Update(func(w Writer) error {
		if err := w.DeleteEndpointByAddress("orders", "127.0.0.1:1"); err != nil {
			return err
		}
		return errTest
	})
	if err != errTest {
		t.Fatalf("Update = %v", err)
	}
	if e, _ := s.Snapshot().Endpoint(nil, "orders", "127.0.0.1:1"); e == nil {
		t.Fatal("a failed update was committed")
	}
}

type testError struct{}

func (testError) Error() string { return "test" }

var errTest error = testError{}

func TestEventsAreNumberedAndBounded(t *testing.T) {
	s := newStore(t)
	s.eventsKept = 3

	ws := memdb.NewWatchSet()
	if evs, err := s.Snapshot().EventsAfter(ws, 0); err != nil || len(evs) != 0 {
		t.Fatalf("EventsAfter on empty store = %v, %v", evs, err)
	}
	for i := range 5 {
		seq, err := s.AppendEvent(&Event{Time: time.Now(), Level: slog.LevelWarn, Msg: "endpoint evicted",
			Attrs: []slog.Attr{slog.Int("i", i)}})
		if err != nil || seq != uint64(i+1) {
			t.Fatalf("AppendEvent #%d = %d, %v", i, seq, err)
		}
	}
	if !fired(ws) {
		t.Fatal("appending did not wake the events watcher")
	}
	evs, err := s.Snapshot().EventsAfter(nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, e := range evs {
		seqs = append(seqs, e.Seq)
	}
	if len(seqs) != 3 || seqs[0] != 3 || seqs[2] != 5 {
		t.Fatalf("kept events %v; want [3 4 5]", seqs)
	}
	if evs, _ := s.Snapshot().EventsAfter(nil, 4); len(evs) != 1 || evs[0].Seq != 5 {
		t.Fatalf("EventsAfter(4) = %v", evs)
	}
}
