// Package event is what a pool (balancer/pool) reports about its cluster:
// typed events, one per change of membership, health or cluster state,
// handed in order to sinks. The eviction log, the state store, the metrics
// and the proxy's own health service are such sinks; none of them is told
// anything any other way.
//
// The package is a leaf (it imports only checker), so that sinks can be
// written in packages the pool itself does not know.
package event

import (
	"time"

	"github.com/vigil-proxy/vigil/checker"
)

// Kind is what happened.
type Kind uint8

// Kinds of events. Endpoint events carry Address; cluster events do not.
const (
	_ Kind = iota
	// ClusterConfigured: the cluster was created, or its policy, panic
	// threshold or health check changed (Settings).
	ClusterConfigured
	// EndpointAdded: an endpoint joined the cluster (Source, Weight,
	// Status pending). Startup marks the endpoints of the configuration
	// the process started with.
	EndpointAdded
	// EndpointChanged: an endpoint's weight or source changed (Weight,
	// Source).
	EndpointChanged
	// EndpointRemoved: an endpoint left the cluster's spec: it takes no
	// new traffic and drains (Status draining, DrainTimeout).
	EndpointRemoved
	// EndpointDrained: a removed endpoint's work ended (or its drain
	// timeout passed) and it is gone.
	EndpointDrained
	// EndpointAdmitted: pending -> healthy.
	EndpointAdmitted
	// EndpointEvicted: pending or healthy -> unhealthy (Status.Reason,
	// Status.Cause, Status.Failures, Err, Hint); with Outlier set, an
	// outlier ejection (Ejection).
	EndpointEvicted
	// EndpointReadmitted: unhealthy -> healthy; with Outlier set, at the
	// end of an ejection, the active check passing.
	EndpointReadmitted
	// EndpointUpdated: the endpoint's status changed without a
	// transition (its counters, or the reason it stays out).
	EndpointUpdated
	// ClusterPanic: fewer than the panic threshold of the judged
	// endpoints are healthy; panic-eligible endpoints take traffic too.
	ClusterPanic
	// ClusterRecovered: the cluster left panic.
	ClusterRecovered
	// ClusterServing: whether the cluster has a healthy endpoint changed
	// (Serving); also sent with the cluster's first picker.
	ClusterServing
	// PickerBuilt: a new picker is in force (Routable).
	PickerBuilt
	// ClusterRemoved: the pool was closed; the cluster and its endpoints
	// are gone.
	ClusterRemoved
)

var kindNames = [...]string{"", "cluster configured", "endpoint added", "endpoint changed", "endpoint removed",
	"endpoint drained", "endpoint admitted", "endpoint evicted", "endpoint readmitted", "endpoint updated",
	"cluster panic", "cluster recovered", "cluster serving", "picker built", "cluster removed"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && k != 0 {
		return kindNames[k]
	}
	return "unknown event"
}

// Transition reports whether k is an endpoint health transition, one of
// the records of the eviction log.
func (k Kind) Transition() bool {
	return k == EndpointAdmitted || k == EndpointEvicted || k == EndpointReadmitted
}

// Settings are a cluster's settings, as of a ClusterConfigured event.
type Settings struct {
	Policy         string // the lb_policy name
	PanicThreshold int
	HealthCheck    checker.Config
}

// Event is one thing that happened to a cluster. Which fields are set
// depends on Kind; Time, Kind and Cluster always are.
type Event struct {
	Kind    Kind
	Time    time.Time
	Cluster string

	// Address names the endpoint of an endpoint event.
	Address string
	// Source says where the endpoint comes from: "config" (listed in
	// the configuration), "dns", "srv", "kubernetes".
	Source string
	// Weight is the endpoint's configured weight.
	Weight uint32
	// Check is the health-check mode in use for the endpoint ("check"
	// for a Watch endpoint that fell back to Check).
	Check checker.Mode
	// Status is the endpoint's health after the event.
	Status checker.Status
	// Err is the failure that caused an eviction, if known.
	Err error
	// Hint explains an eviction whose cause is usually a mistake.
	Hint string
	// Startup marks what the process's first configuration set up.
	Startup bool
	// DrainTimeout bounds a removed endpoint's drain.
	DrainTimeout time.Duration
	// Outlier marks a transition made by outlier detection (an ejection,
	// or the readmission at its end) rather than by the active check.
	Outlier bool
	// Ejection is the endpoint's outlier ejection while it is ejected
	// (zero otherwise); Status then says unhealthy, for a transport-like
	// cause, whatever the active check says.
	Ejection Ejection

	// Healthy and Total count the cluster's endpoints (not draining) after
	// the event; Routable counts the endpoints its picker chooses from.
	Healthy, Total, Routable int
	// Panic is whether the cluster is in panic after the event.
	Panic bool
	// Serving is whether the cluster has a healthy endpoint.
	Serving bool
	// Settings are the cluster's settings (ClusterConfigured).
	Settings *Settings
}

// Ejection is an endpoint's outlier ejection.
type Ejection struct {
	// Since and Until bound it; Until is zero when not ejected.
	Since, Until time.Time
	// Count is the ejection's number in a row (its duration is Count x
	// the base ejection time, capped).
	Count int
	// Rule is what ejected it: consecutive_failures or
	// failure_percentage.
	Rule string
	// Reason is the last failure's gRPC code name; Failures counts the
	// failures that tripped the rule.
	Reason   string
	Failures int
}

// Active reports whether e is an ejection in force.
func (e Ejection) Active() bool { return !e.Until.IsZero() }

// Duration is how long the ejection lasts.
func (e Ejection) Duration() time.Duration { return e.Until.Sub(e.Since) }

// Sink receives a pool's events. Handle is called with the events of one
// change or one applied plan, in the order they happened, one call at a
// time per pool, while the pool holds its lock: it must be quick, must
// not keep the slice, and must not call the pool.
type Sink interface {
	Handle(events []Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(events []Event)

// Handle calls f.
func (f SinkFunc) Handle(events []Event) { f(events) }
