package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// controlHandler serves the HTTP control endpoint:
//
//	GET  /health                                   every service's status, as JSON
//	POST /health?service=NAME&status=NOT_SERVING   set one (SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN)
//	GET  /load                                     the load reported (-orca), as JSON
//	POST /load?utilization=0.8&qps=100             set it (either or both)
//
// service may be omitted or empty for the whole server "". A name that is
// not registered yet gets registered.
func (b *backend) controlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", b.getHealth)
	mux.HandleFunc("POST /health", b.postHealth)
	mux.HandleFunc("GET /load", b.getLoad)
	mux.HandleFunc("POST /load", b.postLoad)
	return mux
}

// healthReport is the body of GET /health.
type healthReport struct {
	ID       string            `json:"id"`
	Health   healthMode        `json:"health"`
	Services map[string]string `json:"services"`
}

// healthChange is the body of a successful POST /health.
type healthChange struct {
	Service  string `json:"service"`
	Status   string `json:"status"`
	Previous string `json:"previous"`
}

func (b *backend) getHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, healthReport{ID: b.id, Health: b.opts.health, Services: b.statuses()})
}

func (b *backend) postHealth(w http.ResponseWriter, r *http.Request) {
	if b.opts.health == healthNone {
		http.Error(w, "no health service registered (-health=none): nothing to set", http.StatusConflict)
		return
	}
	service := r.FormValue("service")
	st, err := parseStatus(r.FormValue("status"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	previous, err := b.setStatus(service, st, "control "+r.RemoteAddr)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeJSON(w, healthChange{Service: service, Status: st.String(), Previous: previous.String()})
}

// parseStatus parses a serving status name, case-insensitively.
func parseStatus(name string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	if v, ok := healthpb.HealthCheckResponse_ServingStatus_value[strings.ToUpper(strings.TrimSpace(name))]; ok {
		return healthpb.HealthCheckResponse_ServingStatus(v), nil
	}
	return 0, fmt.Errorf("status %q: want SERVING, NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN", name)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// An error here means the client went away; there is no one to tell.
	_ = enc.Encode(v)
}
