package config

import (
	"strings"
	"testing"

	"github.com/vigil-proxy/vigil/balancer/ringhash"
	"github.com/vigil-proxy/vigil/checker"
)

// checkInvariants asserts what every successfully parsed Config guarantees,
// independently of how the parser establishes it.
func checkInvariants(t testing.TB, cfg *Config) {
	t.Helper()
	if cfg.Admin.Address != "" {
		if err := checkAddress(cfg.Admin.Address, listenAddress); err != nil {
			t.Errorf("admin.address: %v", err)
		}
	}
	if cfg.Log.Format != LogText && cfg.Log.Format != LogJSON {
		t.Errorf("log.format = %q", cfg.Log.Format)
	}
	switch cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		t.Errorf("log.level = %q", cfg.Log.Level)
	}
	if cfg.Shutdown.DrainDelay < 0 || cfg.Shutdown.Timeout <= 0 {
		t.Errorf("shutdown = %+v", cfg.Shutdown)
	}
	clusters := make(map[string]bool)
	for _, c := range cfg.Clusters {
		if checkName(c.Name) != nil || clusters[c.Name] {
			t.Errorf("cluster name %q invalid or duplicate", c.Name)
		}
		clusters[c.Name] = true
		if c.LBPolicy != RoundRobin && c.LBPolicy != LeastRequest && c.LBPolicy != Random && c.LBPolicy != RingHash && c.LBPolicy != Maglev {
			t.Errorf("cluster %q lb_policy = %q", c.Name, c.LBPolicy)
		}
		if (c.Hash != nil) != c.LBPolicy.Hashes() {
			t.Errorf("cluster %q: lb_policy %s with hash %+v", c.Name, c.LBPolicy, c.Hash)
		}
		if c.Hash != nil && ((c.LBPolicy == RingHash) != (c.Hash.RingSize > 0) || c.Hash.RingSize > ringhash.MaxRingSize || c.Hash.Header != strings.ToLower(c.Hash.Header)) {
			t.Errorf("cluster %q hash = %+v", c.Name, c.Hash)
		}
		if c.PanicThreshold < 0 || c.PanicThreshold > 100 {
			t.Errorf("cluster %q panic_threshold = %d", c.Name, c.PanicThreshold)
		}
		if len(c.Endpoints) == 0 {
			t.Errorf("cluster %q has no endpoints", c.Name)
		}
		if c.Pos.Line < 1 || c.Pos.Col < 1 {
			t.Errorf("cluster %q pos = %+v", c.Name, c.Pos)
		}
		addrs := make(map[string]bool)
		for _, ep := range c.Endpoints {
			if err := checkAddress(ep.Address, endpointAddress); err != nil {
				t.Errorf("cluster %q endpoint: %v", c.Name, err)
			}
			if addrs[addressKey(ep.Address)] {
				t.Errorf("cluster %q: duplicate endpoint %q", c.Name, ep.Address)
			}
			addrs[addressKey(ep.Address)] = true
			if ep.Weight < 1 || ep.Weight > MaxWeight {
				t.Errorf("cluster %q endpoint %q weight = %d", c.Name, ep.Address, ep.Weight)
			}
			if ep.Pos.Line < 1 || ep.Pos.Col < 1 {
				t.Errorf("endpoint %q pos = %+v", ep.Address, ep.Pos)
			}
		}
		hc := c.HealthCheck
		switch hc.Mode {
		case checker.ModeCheck, checker.ModeWatch, checker.ModeTCP, checker.ModeNone:
		default:
			t.Errorf("cluster %q mode = %q", c.Name, hc.Mode)
		}
		if hc.Interval <= 0 || hc.Timeout <= 0 {
			t.Errorf("cluster %q interval %v timeout %v", c.Name, hc.Interval, hc.Timeout)
		}
		if err := hc.Validate(); err != nil {
			t.Errorf("cluster %q health_check: %v", c.Name, err)
		}
		if hc.Jitter < 0 || hc.Jitter >= 1 {
			t.Errorf("cluster %q jitter = %v", c.Name, hc.Jitter)
		}
		if hc.Thresholds.Unhealthy < 1 || hc.Thresholds.Healthy < 1 {
			t.Errorf("cluster %q thresholds = %d/%d", c.Name, hc.Thresholds.Unhealthy, hc.Thresholds.Healthy)
		}
		if hc.OnUnimplemented != checker.UnimplementedEvict && hc.OnUnimplemented != checker.UnimplementedServe {
			t.Errorf("cluster %q on_unimplemented = %q", c.Name, hc.OnUnimplemented)
		}
		if hc.Liveness != checker.LivenessKeepalive && hc.Liveness != checker.LivenessCheck {
			t.Errorf("cluster %q liveness = %q", c.Name, hc.Liveness)
		}
	}
	listeners := make(map[string]bool)
	for _, l := range cfg.Listeners {
		if checkName(l.Name) != nil || listeners[l.Name] {
			t.Errorf("listener name %q invalid or duplicate", l.Name)
		}
		listeners[l.Name] = true
		if err := checkAddress(l.Address, listenAddress); err != nil {
			t.Errorf("listener %q: %v", l.Name, err)
		}
		if !clusters[l.Cluster] && (l.Cluster != "" || len(l.Routes) == 0) {
			t.Errorf("listener %q names missing cluster %q", l.Name, l.Cluster)
		}
		routeNames := map[string]bool{}
		for j, r := range l.Routes {
			if !clusters[r.Cluster] {
				t.Errorf("listener %q route %d names missing cluster %q", l.Name, j, r.Cluster)
			}
			if r.Name != "" && (checkName(r.Name) != nil || routeNames[r.Name]) {
				t.Errorf("listener %q route name %q invalid or duplicate", l.Name, r.Name)
			}
			routeNames[r.Name] = true
			if err := r.Match.Check(); err != nil {
				t.Errorf("listener %q route %d: %v", l.Name, j, err)
			}
			if r.Timeout < 0 || r.Pos.Line < 1 || r.Pos.Col < 1 || l.Protocol != ProtocolGRPC {
				t.Errorf("listener %q route %d = %+v", l.Name, j, r)
			}
		}
		if l.Protocol != ProtocolGRPC && l.Protocol != ProtocolTCP {
			t.Errorf("listener %q protocol = %q", l.Name, l.Protocol)
		}
		if l.MaxConcurrentStreams < 1 || l.MaxMessageSize < MinMessageSize || l.MaxMessageSize > MaxMessageSize ||
			l.IdleTimeout <= 0 || l.MaxConnections < 0 {
			t.Errorf("listener %q limits = %+v", l.Name, l)
		}
		if l.Pos.Line < 1 || l.Pos.Col < 1 {
			t.Errorf("listener %q pos = %+v", l.Name, l.Pos)
		}
	}
}
