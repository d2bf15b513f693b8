package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// RoutesResponse is the answer of GET /routes: every listener's route
// table as configured, in the order routes are tried.
type RoutesResponse struct {
	Listeners []ListenerRoutes `json:"listeners"`
}

// ListenerRoutes is one listener's table in RoutesResponse.
type ListenerRoutes struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	// Default is the cluster of what no route matches; "" for none (such
	// an RPC fails with UNIMPLEMENTED).
	Default string  `json:"default"`
	Routes  []Route `json:"routes"`
}

// Route is one route in ListenerRoutes; empty match fields match
// anything.
type Route struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// Label names the route in metrics: its name, else its index.
	Label     string `json:"label"`
	Service   string `json:"service,omitempty"`
	Method    string `json:"method,omitempty"`
	Authority string `json:"authority,omitempty"`
	SNI       string `json:"sni,omitempty"`
	Cluster   string `json:"cluster"`
	// Timeout is a Go duration, "" for none.
	Timeout string `json:"timeout,omitempty"`
}

func (s *Server) routes(w http.ResponseWriter, _ *http.Request) {
	rows, err := s.opts.Store.Snapshot().Listeners(nil)
	if err != nil {
		s.log.Error("admin: read listeners", "err", err)
		http.Error(w, fmt.Sprintf("read listeners: %v", err), http.StatusInternalServerError)
		return
	}
	resp := RoutesResponse{Listeners: make([]ListenerRoutes, 0, len(rows))}
	for _, l := range rows {
		lr := ListenerRoutes{Name: l.Name, Protocol: string(l.Protocol), Default: l.Cluster, Routes: make([]Route, 0, len(l.Routes))}
		for i, r := range l.Routes {
			label := r.Name
			if label == "" {
				label = strconv.Itoa(i)
			}
			rt := Route{Index: i, Name: r.Name, Label: label, Service: r.Match.Service, Method: r.Match.Method,
				Authority: r.Match.Authority, SNI: r.Match.SNI, Cluster: r.Cluster}
			if r.Timeout > 0 {
				rt.Timeout = r.Timeout.String()
			}
			lr.Routes = append(lr.Routes, rt)
		}
		resp.Listeners = append(resp.Listeners, lr)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(resp)
}
