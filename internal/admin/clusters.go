package admin

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/state"
)

// ClustersResponse is the answer of GET /clusters (DESIGN.md, "Admin API").
type ClustersResponse struct {
	Clusters []Cluster `json:"clusters"`
}

// Cluster is one cluster in ClustersResponse.
type Cluster struct {
	Name string `json:"name"`
	// Healthy and Total count the endpoints in the configuration (Total
	// leaves out draining ones, like the eviction log's healthy/total).
	Healthy int  `json:"healthy"`
	Total   int  `json:"total"`
	Panic   bool `json:"panic"`
	// LBPolicy, PanicThreshold and Check are the cluster's settings.
	LBPolicy       string `json:"lb_policy"`
	PanicThreshold int    `json:"panic_threshold"`
	Check          string `json:"check"`
	// TLS is true when the cluster reaches its endpoints over TLS, for
	// traffic and health checks alike.
	TLS       bool       `json:"tls"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint in ClustersResponse.
type Endpoint struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// EffectiveWeight is the weight traffic is spread by now: Weight,
	// or less while slow start ramps the endpoint up after its admission
	// or readmission.
	EffectiveWeight float64 `json:"effective_weight"`
	// Health is pending, healthy, unhealthy or draining.
	Health string `json:"health"`
	// Reason is what evicted the endpoint, or its latest failure while it
	// stays out; "" when it is healthy.
	Reason string `json:"reason"`
	// Cause is who decided: "answer" (the backend said so), "transport"
	// (it could not be asked), or "" when healthy.
	Cause string `json:"cause"`
	// Hint says in one line why an unhealthy endpoint is out, when the
	// cause is usually a mistake on the backend; "" otherwise.
	Hint string `json:"hint"`
	// Source is where the endpoint comes from: config, dns, srv or
	// kubernetes.
	Source string `json:"source"`
	// Since is when Health last changed.
	Since time.Time `json:"since"`
	// Failures counts consecutive failed probes.
	Failures int `json:"failures"`
	// Check is the health-check mode in force.
	Check string `json:"check"`
	// LastProbe is when the latest probe result arrived (null before the
	// first, or when unknown).
	LastProbe *time.Time `json:"last_probe"`
	// LastLatencyMS is how long the latest probe took, in milliseconds
	// (null when unknown: before the first probe, or when the latest
	// result was a status pushed on a Watch stream).
	LastLatencyMS *float64 `json:"last_latency_ms"`
	// Inflight counts the connections and RPCs open to the endpoint.
	Inflight int64 `json:"inflight"`
	// Ejection is the endpoint's outlier ejection while it is ejected,
	// null otherwise.
	Ejection *Ejection `json:"ejection"`
	// LoadReport is the endpoint's latest ORCA load report in a
	// weighted_round_robin cluster, null otherwise or before the first.
	LoadReport *LoadReport `json:"load_report"`
}

// LoadReport is an endpoint's latest ORCA load report in ClustersResponse.
type LoadReport struct {
	CPUUtilization         float64 `json:"cpu_utilization"`
	ApplicationUtilization float64 `json:"application_utilization"`
	QPS                    float64 `json:"qps"`
	EPS                    float64 `json:"eps"`
	// At is when it came; AgeSeconds how long ago, at the answer.
	At         time.Time `json:"at"`
	AgeSeconds float64   `json:"age_seconds"`
	// Weight is the weight the reports give the endpoint now, 0 when they
	// give none (blackout, expired, no utilization or qps): its
	// effective_weight is then the mean of the others'.
	Weight float64 `json:"weight"`
}

// Ejection is an endpoint's outlier ejection in ClustersResponse.
type Ejection struct {
	// Since and Until bound it: it ends at Until (readmitted then if the
	// active check passes).
	Since time.Time `json:"since"`
	Until time.Time `json:"until"`
	// Duration is Until - Since, as a Go duration.
	Duration string `json:"duration"`
	// Count is its number in a row (it lasts Count x base_ejection_time,
	// capped by max_ejection_time).
	Count int `json:"count"`
	// Rule is consecutive_failures or failure_percentage; Reason the
	// last failure's gRPC code name; Failures the failures that tripped
	// the rule.
	Rule     string `json:"rule"`
	Reason   string `json:"reason"`
	Failures int    `json:"failures"`
}

// snapshotClusters reads every cluster and endpoint from one consistent
// view of the store.
func (s *Server) snapshotClusters() (*ClustersResponse, error) {
	txn := s.opts.Store.Snapshot()
	rows, err := txn.Clusters(nil)
	if err != nil {
		return nil, err
	}
	resp := &ClustersResponse{Clusters: make([]Cluster, 0, len(rows))}
	for _, row := range rows {
		eps, err := txn.EndpointsByCluster(nil, row.Name)
		if err != nil {
			return nil, err
		}
		resp.Clusters = append(resp.Clusters, s.cluster(row, eps))
	}
	return resp, nil
}

func (s *Server) cluster(row *state.Cluster, eps []*state.Endpoint) Cluster {
	c := Cluster{
		Name:           row.Name,
		Panic:          row.Panic,
		LBPolicy:       string(row.LBPolicy),
		PanicThreshold: row.PanicThreshold,
		Check:          string(row.HealthCheck.Mode),
		TLS:            row.HealthCheck.TLS != nil,
		Endpoints:      make([]Endpoint, 0, len(eps)),
	}
	for _, e := range eps {
		switch e.Status.Health {
		case checker.Healthy:
			c.Healthy++
			c.Total++
		case checker.Draining:
		default:
			c.Total++
		}
		ep := Endpoint{
			Address:         e.Address,
			Weight:          e.Weight,
			EffectiveWeight: float64(e.Weight),
			Health:          e.Status.Health.String(),
			Reason:          e.Status.Reason,
			Since:           e.Status.Since.UTC(),
			Failures:        e.Status.Failures,
			Check:           string(e.Check),
			Hint:            e.Hint,
			Source:          e.Source,
		}
		if e.Status.Cause != checker.CauseNone {
			ep.Cause = e.Status.Cause.String()
		}
		if ej := e.Ejection; ej.Active() {
			ep.Ejection = &Ejection{Since: ej.Since.UTC(), Until: ej.Until.UTC(), Duration: ej.Duration().String(),
				Count: ej.Count, Rule: ej.Rule, Reason: ej.Reason, Failures: ej.Failures}
		}
		if s.opts.Stats != nil {
			if st, ok := s.opts.Stats(e.Cluster, e.Address); ok {
				if !st.LastProbe.IsZero() {
					t := st.LastProbe.UTC()
					ep.LastProbe = &t
				}
				// A status pushed on a Watch stream is not timed: no
				// latency rather than zero.
				if st.LastLatency > 0 {
					ms := float64(st.LastLatency) / float64(time.Millisecond)
					ep.LastLatencyMS = &ms
				}
				ep.Inflight = st.Inflight
				if l := st.Load; l != nil {
					ep.LoadReport = &LoadReport{CPUUtilization: l.CPUUtilization, ApplicationUtilization: l.ApplicationUtilization,
						QPS: l.QPS, EPS: l.EPS, At: l.At.UTC(), AgeSeconds: math.Round(s.now().Sub(l.At).Seconds()*1000) / 1000,
						Weight: math.Round(l.Weight*100) / 100}
				}
				if st.HasEffectiveWeight {
					// Hundredths: the pickers resolve no finer
					// (slowstart.Scale), and a page need not redraw
					// for less.
					ep.EffectiveWeight = math.Round(st.EffectiveWeight*100) / 100
				}
			}
		}
		c.Endpoints = append(c.Endpoints, ep)
	}
	return c
}

func (s *Server) clusters(w http.ResponseWriter, _ *http.Request) {
	resp, err := s.snapshotClusters()
	if err != nil {
		s.log.Error("admin: read clusters", "err", err)
		http.Error(w, fmt.Sprintf("read clusters: %v", err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(resp)
}

// now is the time of an answer, for ages (Options.Now).
func (s *Server) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}
