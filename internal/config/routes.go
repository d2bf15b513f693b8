package config

import (
	"errors"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigil-proxy/vigil/balancer/route"
)

// routeKeys are the keys of a route. A tcp listener's routes match on sni
// only, a grpc listener's on service, method and authority.
var (
	routeKeys     = []string{"name", "service", "method", "authority", "sni", "cluster", "timeout"}
	grpcMatchKeys = []string{"service", "method", "authority"}
)

// Route is one entry of a listener's routes: what it matches (the rules
// are package route's) and the cluster that takes it.
type Route struct {
	// Name is optional; it names the route in metrics and logs.
	Name    string
	Match   route.Match
	Cluster string
	// Timeout, when positive, bounds the RPCs the route takes (grpc).
	Timeout time.Duration

	// Pos is the route's mapping; NamePos and ClusterPos where its name
	// and cluster are (zero when absent or invalid).
	Pos, NamePos, ClusterPos Pos
}

// shiftRoutes returns routes with every position moved by d lines (see
// Parser): a copy, since the routes may be in use by a Config.
func shiftRoutes(routes []Route, d int) []Route {
	if routes == nil {
		return nil
	}
	out := slices.Clone(routes)
	for i := range out {
		r := &out[i]
		r.Pos, r.NamePos, r.ClusterPos = r.Pos.shift(d), r.NamePos.shift(d), r.ClusterPos.shift(d)
	}
	return out
}

// sameRoutes reports whether two route lists are the same, positions
// aside.
func sameRoutes(a, b []Route) bool {
	return slices.EqualFunc(a, b, func(x, y Route) bool {
		x.Pos, x.NamePos, x.ClusterPos = Pos{}, Pos{}, Pos{}
		y.Pos, y.NamePos, y.ClusterPos = Pos{}, Pos{}, Pos{}
		return x == y
	})
}

// decodeRoutes reads a listener's routes. The checks across routes and
// clusters (duplicate names, unknown clusters, shadowed routes) are
// crossCheck's, which sees every cluster.
func (w *walker) decodeRoutes(raw *yaml.Node, path string, protocol Protocol) []Route {
	items, _, ok := w.sequence(raw, path)
	if !ok {
		return nil
	}
	routes := make([]Route, 0, len(items))
	for i, item := range items {
		if r, ok := w.decodeRoute(item, index(path, i), protocol); ok {
			routes = append(routes, r)
		} else {
			// Keep the index of later routes (their labels and messages)
			// even though this one is reported.
			routes = append(routes, Route{})
		}
	}
	return routes
}

func (w *walker) decodeRoute(raw *yaml.Node, path string, protocol Protocol) (Route, bool) {
	var r Route
	f, m, ok := w.mapping(raw, path, routeKeys)
	if m != nil {
		r.Pos = nodePos(m)
	}
	if !ok {
		return r, false
	}
	good := true
	if v := f.value("name"); v != nil {
		if s, n, ok := w.name(v, join(path, "name")); ok {
			r.Name, r.NamePos = s, nodePos(n)
		} else {
			good = false
		}
	}
	if w.require(&f, m, path, "cluster", " (the cluster this route forwards to)") {
		if s, n, ok := w.name(f.value("cluster"), join(path, "cluster")); ok {
			r.Cluster, r.ClusterPos = s, nodePos(n)
		} else {
			good = false
		}
	} else {
		good = false
	}
	if protocol == ProtocolTCP {
		for _, key := range grpcMatchKeys {
			if e := f.find(key, 0); e != nil {
				w.errs.at(e.key, join(path, key), "%s matches gRPC calls: only on a grpc listener", key)
				good = false
			}
		}
	}
	matchBad := false
	if v := f.value("sni"); v != nil {
		if protocol != ProtocolTCP {
			w.errs.at(f.find("sni", 0).key, join(path, "sni"), "sni matches a TLS ClientHello's server name: only on a tcp listener (a grpc listener matches authority)")
			matchBad = true
		} else if s, n, ok := w.str(v, join(path, "sni")); ok {
			h, err := route.CheckHost(s)
			if err != nil {
				w.errs.at(n, join(path, "sni"), "%v", err)
				matchBad = true
			}
			r.Match.SNI = h
		} else {
			matchBad = true
		}
	}
	if v := f.value("service"); v != nil {
		if s, n, ok := w.str(v, join(path, "service")); ok {
			if err := route.CheckService(s); err != nil {
				w.errs.at(n, join(path, "service"), "%v", err)
				matchBad = true
			}
			r.Match.Service = s
		} else {
			matchBad = true
		}
	}
	if v := f.value("method"); v != nil {
		if s, n, ok := w.str(v, join(path, "method")); ok {
			if err := route.CheckMethod(s); err != nil {
				w.errs.at(n, join(path, "method"), "%v", err)
				matchBad = true
			}
			r.Match.Method = s
		} else {
			matchBad = true
		}
	}
	if v := f.value("authority"); v != nil {
		if s, n, ok := w.str(v, join(path, "authority")); ok {
			h, err := route.CheckHost(s)
			if err != nil {
				w.errs.at(n, join(path, "authority"), "%v", err)
				matchBad = true
			}
			r.Match.Authority = h
		} else {
			matchBad = true
		}
	}
	if v := f.value("timeout"); v != nil {
		if protocol == ProtocolTCP {
			w.errs.at(f.find("timeout", 0).key, join(path, "timeout"), "timeout bounds gRPC calls: only on a grpc listener")
			good = false
		} else if d, ok := w.duration(v, join(path, "timeout"), false); ok {
			r.Timeout = d
		} else {
			good = false
		}
	}
	good = good && !matchBad
	if !matchBad {
		switch err := r.Match.Check(); {
		case errors.Is(err, route.ErrEmptyMatch) && protocol == ProtocolTCP:
			w.errs.at(m, path, "a route on a tcp listener must match on sni; the listener's cluster takes what no route matches")
			good = false
		case errors.Is(err, route.ErrEmptyMatch):
			w.errs.at(m, path, "a route must match on something: service (with method), or authority; the listener's cluster takes what no route matches")
			good = false
		case errors.Is(err, route.ErrMethodNeedsService):
			w.errs.at(f.find("method", 0).key, join(path, "method"), "method needs service: a method is matched within its service, like service: billing.v1.Billing with method: Charge")
			good = false
		}
	}
	return r, good
}

// checkRoutes reports, for listener i, duplicate route names, routes to
// unknown clusters and (a warning) routes an earlier route shadows.
func (w *walker) checkRoutes(i int, l *Listener, clusters map[string]int, unknown func(name string) string) {
	names := map[string]int{}
	for j := range l.Routes {
		r := &l.Routes[j]
		path := index(join(index("listeners", i), "routes"), j)
		if r.NamePos != (Pos{}) {
			if first, dup := names[r.Name]; dup {
				w.errs.atPos(r.NamePos, join(path, "name"), "duplicate route name %s in this listener (first at line %d)", quote(r.Name), first)
			} else {
				names[r.Name] = r.NamePos.Line
			}
		}
		if r.ClusterPos != (Pos{}) {
			if _, ok := clusters[r.Cluster]; !ok {
				w.errs.atPos(r.ClusterPos, join(path, "cluster"), "unknown cluster %s%s", quote(r.Cluster), unknown(r.Cluster))
			}
		}
		if r.Match.Check() != nil {
			continue // reported
		}
		for k := range j {
			if e := &l.Routes[k]; e.Match.Check() == nil && e.Match.Covers(r.Match) {
				w.errs.warnAtPos(r.Pos, path, "this route never matches: routes[%d] (line %d, %s) matches everything it does, and the first match wins", k, e.Pos.Line, e.Match)
				break
			}
		}
	}
}
