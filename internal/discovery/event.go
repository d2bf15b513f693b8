package discovery

import "slices"

// EventKind says what an Event reports.
type EventKind int

// Kinds of events.
const (
	// Updated: a lookup succeeded and found a set different from the last
	// one (or the first set). Endpoints is the complete new set.
	Updated EventKind = iota + 1
	// Unchanged: a lookup succeeded and found the last set again. Nothing
	// needs doing; it is reported for metrics.
	Unchanged
	// Failed: a lookup failed; the last good set stays in force. First is
	// true for the first failure of a streak.
	Failed
	// Recovered: a lookup succeeded after a failure streak. An Updated or
	// Unchanged event for the same lookup follows.
	Recovered
)

func (k EventKind) String() string {
	switch k {
	case Updated:
		return "updated"
	case Unchanged:
		return "unchanged"
	case Failed:
		return "failed"
	case Recovered:
		return "recovered"
	}
	return "unknown"
}

// Event is what a Watcher reports after each lookup (or, for kubernetes,
// each change the informer saw and each error its list or watch met).
type Event struct {
	Kind EventKind
	// Endpoints is the complete set (Updated), sorted by address. The
	// handler may keep it; the Watcher does not modify it afterwards.
	Endpoints []Endpoint
	// Err is why the lookup failed (Failed).
	Err error
	// First marks the first failure of a streak (Failed).
	First bool
	// Failures counts the failures of the current streak, including this
	// one (Failed), or of the streak that ended (Recovered).
	Failures int
}

// tracker turns lookup outcomes into events: it remembers the last good
// set and whether a failure streak is under way. It is a pure state
// machine, driven by the source's goroutine.
type tracker struct {
	last     []Endpoint
	synced   bool // last holds a set from a successful lookup
	failures int  // of the current streak; 0 when not failing
}

// observe returns the events for one lookup outcome: set is the complete
// set found when err is nil.
func (t *tracker) observe(set []Endpoint, err error) []Event {
	if err != nil {
		t.failures++
		return []Event{{Kind: Failed, Err: err, First: t.failures == 1, Failures: t.failures}}
	}
	var events []Event
	if t.failures > 0 {
		events = append(events, Event{Kind: Recovered, Failures: t.failures})
		t.failures = 0
	}
	if t.synced && slices.Equal(set, t.last) {
		return append(events, Event{Kind: Unchanged})
	}
	if set == nil {
		set = []Endpoint{}
	}
	t.last, t.synced = set, true
	return append(events, Event{Kind: Updated, Endpoints: set})
}
