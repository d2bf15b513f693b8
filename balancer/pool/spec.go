package pool

import (
	"log/slog"
	"slices"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/roundrobin"
	"github.com/vigil-proxy/vigil/balancer/slowstart"
	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
)

// Source says where an endpoint comes from.
type Source string

// Sources of endpoints.
const (
	// SourceConfig: listed in the Spec (vigil's configuration file).
	SourceConfig     Source = "config"
	SourceDNS        Source = "dns"
	SourceSRV        Source = "srv"
	SourceKubernetes Source = "kubernetes"
)

// Endpoint is one backend address with its relative weight.
type Endpoint struct {
	Address string
	// Weight is at least 1; 0 means 1.
	Weight uint32
}

// DefaultDrainTimeout bounds a removed endpoint's drain when the Spec
// gives none.
const DefaultDrainTimeout = 10 * time.Second

// Spec is what a cluster should be.
type Spec struct {
	// Policy builds the pickers; nil means round robin.
	Policy balancer.Policy
	// PanicThreshold is a percentage (0-100); 0 disables panic mode.
	PanicThreshold int
	// HealthCheck is how the endpoints are probed.
	HealthCheck checker.Config
	// Endpoints are the listed endpoints (source "config").
	Endpoints []Endpoint
	// DrainTimeout bounds how long a removed endpoint's in-flight work
	// may take before what is left is cut; 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Outlier turns on passive outlier detection (nil: off): endpoints
	// whose traffic fails are ejected for a while (see outlier.go).
	Outlier *outlier.Config
	// SlowStart ramps up the weight of an endpoint admitted or
	// readmitted (nil: off; see slowstart.go).
	SlowStart *slowstart.Config
	// TLS, when not nil, secures every connection to the endpoints, for
	// traffic and for health checks alike (Apply sets HealthCheck.TLS to
	// it). A change reaches new connections; probe connections are
	// replaced, and the data paths' open connections keep theirs.
	TLS checker.TLS
	// LoadReports configures the load reports that weigh the endpoints
	// when Policy is weighted_round_robin (nil: wrr.DefaultConfig; see
	// load.go); ignored with another policy.
	LoadReports *wrr.Config
}

func (s Spec) policy() balancer.Policy {
	if s.Policy == nil {
		return roundrobin.Policy{}
	}
	return s.Policy
}

func (s Spec) drainTimeout() time.Duration {
	if s.DrainTimeout <= 0 {
		return DefaultDrainTimeout
	}
	return s.DrainTimeout
}

// same reports whether s and o ask for the same cluster, endpoints in the
// same order: a reload that leaves a cluster's text alone costs this
// comparison and nothing more.
func (s Spec) same(o Spec) bool {
	return s.policy() == o.policy() && s.PanicThreshold == o.PanicThreshold && s.HealthCheck == o.HealthCheck &&
		s.drainTimeout() == o.drainTimeout() && slices.Equal(s.Endpoints, o.Endpoints) && sameOutlier(s.Outlier, o.Outlier) &&
		sameSlowStart(s.SlowStart, o.SlowStart) && sameLoadReports(s.LoadReports, o.LoadReports)
}

func sameSlowStart(a, b *slowstart.Config) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

func sameOutlier(a, b *outlier.Config) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

// Plan is what one Apply or SetDiscovered changed. Addresses are sorted.
type Plan struct {
	Cluster string
	// New marks the pool's first plan.
	New bool
	// Added are endpoints that joined (or came back while draining);
	// Removed left and drain; Changed changed weight or source.
	Added, Removed, Changed []string
	// PolicyChanged: the lb policy or the panic threshold changed.
	PolicyChanged bool
	// HealthCheckChanged: the health-check configuration changed. Only a
	// change beyond the thresholds restarts the probers.
	HealthCheckChanged bool
	// OutlierChanged: outlier detection was turned on, off or changed;
	// current ejections keep their end (unless it was turned off).
	OutlierChanged bool
	// SlowStartChanged: slow start was turned on, off or changed; ramps
	// in progress keep their start (and end at once if it was turned off).
	SlowStartChanged bool
	// LoadReportsChanged: weighing by load reports was turned on or off
	// (with the policy), or its settings changed.
	LoadReportsChanged bool
}

// Empty reports whether the plan changed nothing.
func (p Plan) Empty() bool {
	return !p.New && len(p.Added) == 0 && len(p.Removed) == 0 && len(p.Changed) == 0 &&
		!p.PolicyChanged && !p.HealthCheckChanged && !p.OutlierChanged && !p.SlowStartChanged && !p.LoadReportsChanged
}

// Attrs summarizes the plan for a log record.
func (p Plan) Attrs() []slog.Attr {
	return []slog.Attr{
		slog.Int("endpoints_added", len(p.Added)),
		slog.Int("endpoints_removed", len(p.Removed)),
		slog.Int("weights_changed", len(p.Changed)),
	}
}

// wanted is one endpoint the pool should have, with where it comes from.
type wanted struct {
	weight uint32
	source Source
}

// wantedLocked is the union of the listed and the discovered endpoints:
// the listed weight and source win, then the sources in name order.
// p.mu must be held.
func (p *Pool) wantedLocked() map[string]wanted {
	n := len(p.spec.Endpoints)
	for _, eps := range p.discovered {
		n += len(eps)
	}
	w := make(map[string]wanted, n)
	for _, e := range p.spec.Endpoints {
		if _, dup := w[e.Address]; !dup {
			w[e.Address] = wanted{max(e.Weight, 1), SourceConfig}
		}
	}
	sources := make([]Source, 0, len(p.discovered))
	for s := range p.discovered {
		sources = append(sources, s)
	}
	slices.Sort(sources)
	for _, s := range sources {
		for _, e := range p.discovered[s] {
			if _, dup := w[e.Address]; !dup {
				w[e.Address] = wanted{max(e.Weight, 1), s}
			}
		}
	}
	return w
}
