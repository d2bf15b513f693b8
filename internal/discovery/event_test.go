package discovery

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"k8s.io/utils/ptr"

	discoveryv1 "k8s.io/api/discovery/v1"
)

func TestTracker(t *testing.T) {
	a := eps("127.0.0.1:1")
	ab := eps("127.0.0.1:1", "127.0.0.2:1")
	boom := errors.New("boom")
	type step struct {
		set  []Endpoint
		err  error
		want []EventKind
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first set, then the same", []step{
			{set: a, want: []EventKind{Updated}},
			{set: eps("127.0.0.1:1"), want: []EventKind{Unchanged}},
			{set: ab, want: []EventKind{Updated}},
		}},
		{"an empty first answer is an update", []step{
			{set: nil, want: []EventKind{Updated}},
			{set: []Endpoint{}, want: []EventKind{Unchanged}},
		}},
		{"a failure streak, then recovery", []step{
			{set: a, want: []EventKind{Updated}},
			{err: boom, want: []EventKind{Failed}},
			{err: boom, want: []EventKind{Failed}},
			{set: a, want: []EventKind{Recovered, Unchanged}},
			{err: boom, want: []EventKind{Failed}},
			{set: ab, want: []EventKind{Recovered, Updated}},
		}},
		{"failing from the start", []step{
			{err: boom, want: []EventKind{Failed}},
			{set: nil, want: []EventKind{Recovered, Updated}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr tracker
			failures := 0
			for i, st := range tt.steps {
				evs := tr.observe(st.set, st.err)
				var kinds []EventKind
				for _, ev := range evs {
					kinds = append(kinds, ev.Kind)
					switch ev.Kind {
					case Failed:
						failures++
						if ev.First != (failures == 1) || ev.Failures != failures || ev.Err != boom {
							t.Errorf("step %d: %+v after %d failures", i, ev, failures)
						}
					case Recovered:
						if ev.Failures != failures {
							t.Errorf("step %d: recovered after %d, want %d", i, ev.Failures, failures)
						}
						failures = 0
					case Updated:
						if ev.Endpoints == nil || !slices.Equal(ev.Endpoints, st.set) && len(st.set) > 0 {
							t.Errorf("step %d: updated with %v, want %v", i, ev.Endpoints, st.set)
						}
					}
				}
				if !slices.Equal(kinds, st.want) {
					t.Errorf("step %d: events %v, want %v", i, kinds, st.want)
				}
			}
		})
	}
}

func TestConditions(t *testing.T) {
	tests := []struct {
		ready, serving, terminating *bool
		candidate, draining         bool
	}{
		{nil, nil, nil, true, false}, // unset: ready
		{ptr.To(true), ptr.To(true), ptr.To(false), true, false},
		{ptr.To(false), ptr.To(true), ptr.To(true), false, true}, // serving + terminating
		{ptr.To(false), ptr.To(false), ptr.To(true), false, false},
		{ptr.To(false), nil, ptr.To(true), false, true},
		{ptr.To(false), ptr.To(false), ptr.To(false), false, false}, // not ready
		{ptr.To(false), ptr.To(true), ptr.To(false), false, false},  // serving but not ready, not terminating
	}
	for _, tt := range tests {
		c, d := conditions(discoveryv1.EndpointConditions{Ready: tt.ready, Serving: tt.serving, Terminating: tt.terminating})
		if c != tt.candidate || d != tt.draining {
			t.Errorf("conditions(%v, %v, %v) = %v, %v; want %v, %v", boolStr(tt.ready), boolStr(tt.serving), boolStr(tt.terminating), c, d, tt.candidate, tt.draining)
		}
	}
}

func boolStr(b *bool) string {
	if b == nil {
		return "nil"
	}
	if *b {
		return "true"
	}
	return "false"
}

func TestSetBuilder(t *testing.T) {
	b := newSetBuilder(0)
	b.add(mustAP("10.0.0.2:80"), 3, false)
	b.add(mustAP("10.0.0.1:80"), 0, false) // weight 0 counts as 1
	b.add(mustAP("10.0.0.2:80"), 7, false) // twice: the larger weight
	b.add(mustAP("10.0.0.3:80"), 1, true)
	b.add(mustAP("10.0.0.3:80"), 1, false) // a candidate beats a draining listing
	b.add(mustAP("[::ffff:10.0.0.4]:80"), 1, false)
	b.add(mustAP("10.0.0.5:80"), 1, false)
	b.add(mustAP("10.0.0.5:80"), 1, true) // ... in either order
	want := []Endpoint{
		{Address: "10.0.0.1:80", Weight: 1},
		{Address: "10.0.0.2:80", Weight: 7},
		{Address: "10.0.0.3:80", Weight: 1},
		{Address: "10.0.0.4:80", Weight: 1},
		{Address: "10.0.0.5:80", Weight: 1},
	}
	if got := b.set(); !slices.Equal(got, want) {
		t.Errorf("set = %v\nwant %v", got, want)
	}
}

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
