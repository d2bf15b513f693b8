package state

import (
	"fmt"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// Handle writes what a pool's events say about its cluster and its
// endpoints, in one transaction (event.Sink). Events the store has no row
// for are left alone.
func (s *Store) Handle(events []event.Event) {
	err := s.Update(func(w Writer) error {
		for i := range events {
			if err := w.apply(&events[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// A write the schema refuses is a bug in this file; the pool
		// cannot do anything about it.
		panic(fmt.Sprintf("state: write %d events: %v", len(events), err))
	}
}

func (w Writer) apply(ev *event.Event) error {
	switch ev.Kind {
	case event.ClusterConfigured:
		return w.configure(ev)
	case event.ClusterPanic, event.ClusterRecovered:
		return w.updateCluster(ev.Cluster, func(c *Cluster) bool {
			if c.Panic == ev.Panic {
				return false
			}
			c.Panic = ev.Panic
			return true
		})
	case event.ClusterRemoved:
		return w.DeleteClusterByName(ev.Cluster)
	case event.EndpointAdded:
		return w.UpsertEndpoint(&Endpoint{Cluster: ev.Cluster, Address: ev.Address, Weight: ev.Weight,
			Source: ev.Source, Check: ev.Check, Status: ev.Status})
	case event.EndpointDrained:
		return w.DeleteEndpointByAddress(ev.Cluster, ev.Address)
	case event.EndpointChanged, event.EndpointRemoved, event.EndpointAdmitted, event.EndpointEvicted,
		event.EndpointReadmitted, event.EndpointUpdated:
		return w.updateEndpoint(ev)
	}
	return nil
}

// configure records a cluster's settings, keeping its panic flag, and the
// health-check mode of its endpoints.
func (w Writer) configure(ev *event.Event) error {
	st := ev.Settings
	if st == nil {
		return nil
	}
	n := &Cluster{Name: ev.Cluster, LBPolicy: st.Policy, PanicThreshold: st.PanicThreshold, HealthCheck: st.HealthCheck,
		Panic: ev.Panic}
	if err := w.UpsertCluster(n); err != nil {
		return err
	}
	rows, err := w.EndpointsByCluster(nil, ev.Cluster)
	if err != nil {
		return err
	}
	for _, r := range rows {
		if r.Check == st.HealthCheck.Mode || r.Status.Health == checker.Draining {
			continue
		}
		e := *r
		e.Check = st.HealthCheck.Mode
		if err := w.UpsertEndpoint(&e); err != nil {
			return err
		}
	}
	return nil
}

func (w Writer) updateCluster(name string, change func(*Cluster) bool) error {
	c, err := w.Cluster(nil, name)
	if err != nil || c == nil {
		return err
	}
	n := *c
	if !change(&n) {
		return nil
	}
	return w.UpsertCluster(&n)
}

// updateEndpoint records an endpoint's weight, source, mode, status and
// hint as the event has them.
func (w Writer) updateEndpoint(ev *event.Event) error {
	e, err := w.Endpoint(nil, ev.Cluster, ev.Address)
	if err != nil || e == nil {
		return err
	}
	n := Endpoint{Cluster: ev.Cluster, Address: ev.Address, Weight: ev.Weight, Source: ev.Source,
		Check: ev.Check, Status: ev.Status, Hint: ev.Hint, Ejection: ev.Ejection}
	if n == *e {
		return nil
	}
	return w.UpsertEndpoint(&n)
}
