package config

import (
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigil-proxy/vigil/balancer/maglev"
	"github.com/vigil-proxy/vigil/balancer/outlier"
	"github.com/vigil-proxy/vigil/balancer/ringhash"
	"github.com/vigil-proxy/vigil/balancer/slowstart"
	"github.com/vigil-proxy/vigil/balancer/wrr"
	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/fielderr"
)

// The keys of each mapping of the schema.
var (
	topKeys         = []string{"admin", "log", "shutdown", "listeners", "clusters"}
	adminKeys       = []string{"address"}
	logKeys         = []string{"format", "level"}
	shutdownKeys    = []string{"drain_delay", "timeout"}
	listenerKeys    = []string{"name", "address", "protocol", "cluster", "max_concurrent_streams", "max_message_size", "idle_timeout", "max_connections", "tls", "routes", "access_log"}
	accessLogKeys   = []string{"path", "format", "buffer"}
	listenerTLSKeys = []string{"cert_file", "key_file", "certificates", "client_ca_file", "min_version", "handshake_timeout"}
	certPairKeys    = []string{"cert_file", "key_file"}
	clusterKeys     = []string{"name", "lb_policy", "panic_threshold", "endpoints", "discovery", "health_check", "outlier_detection", "slow_start", "hash", "tls", "load_reports"}
	hashKeys        = []string{"header", "ring_size"}
	clusterTLSKeys  = []string{"ca_file", "cert_file", "key_file", "server_name", "insecure_skip_verify"}
	outlierKeys     = []string{"consecutive_failures", "interval", "base_ejection_time", "max_ejection_time", "max_ejection_percent", "failure_percentage", "minimum_requests"}
	slowStartKeys   = []string{"window", "aggression", "min_weight_percent"}
	loadReportKeys  = []string{"period", "blackout", "expiration", "error_penalty"}
	endpointKeys    = []string{"address", "weight"}
	healthCheckKeys = []string{"mode", "service", "interval", "timeout", "jitter", "unhealthy_threshold", "healthy_threshold", "on_unimplemented", "liveness"}
)

// sources remembers where the values that later checks across the whole
// file refer to (duplicates, references) were written; the zero Pos where
// the value is missing or invalid, so each problem is reported once.
// Positions rather than nodes, so that a Parser can keep them for the items
// it caches and shift them when an item moves in the file.
type sources struct {
	admin     Pos
	listeners []listenerSource
	clusters  []Pos // name positions
}

type listenerSource struct {
	name, address, cluster Pos
}

// nodePos is the position of n, or the zero Pos for nil.
func nodePos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{Line: n.Line, Col: n.Column}
}

// decodeConfig walks the document's root node into a Config with defaults
// filled in, then checks what spans sections.
func (w *walker) decodeConfig(root *yaml.Node) *Config {
	cfg, src := w.decodeTop(root)
	if !w.exhausted {
		// A walk cut short by the alias budget saw only part of the file;
		// its cross-references would be noise.
		w.crossCheck(cfg, src)
	}
	return cfg
}

// decodeTop decodes the root mapping and every section, without the checks
// across sections, which a Parser runs itself once it has put together the
// items it decoded separately.
func (w *walker) decodeTop(root *yaml.Node) (*Config, *sources) {
	cfg := &Config{
		Admin:    Admin{Address: DefaultAdminAddress},
		Log:      Log{Format: DefaultLogFormat, Level: DefaultLogLevel},
		Shutdown: Shutdown{DrainDelay: DefaultDrainDelay, Timeout: DefaultShutdownTimeout},
	}
	src := &sources{}
	f, _, ok := w.mapping(root, "", topKeys)
	if !ok {
		return cfg, src
	}
	if v := f.value("admin"); v != nil {
		src.admin = nodePos(w.decodeAdmin(v, &cfg.Admin))
	}
	if v := f.value("log"); v != nil {
		w.decodeLog(v, &cfg.Log)
	}
	if v := f.value("shutdown"); v != nil {
		w.decodeShutdown(v, &cfg.Shutdown)
	}
	if v := f.value("listeners"); v != nil {
		items, _, _ := w.sequence(v, "listeners")
		for i, item := range items {
			l, ls := w.decodeListener(item, index("listeners", i))
			cfg.Listeners = append(cfg.Listeners, l)
			src.listeners = append(src.listeners, ls)
		}
	}
	if v := f.value("clusters"); v != nil {
		items, _, _ := w.sequence(v, "clusters")
		for i, item := range items {
			c, name := w.decodeCluster(item, index("clusters", i))
			cfg.Clusters = append(cfg.Clusters, c)
			src.clusters = append(src.clusters, nodePos(name))
		}
	}
	return cfg, src
}

func (w *walker) decodeAdmin(raw *yaml.Node, admin *Admin) *yaml.Node {
	f, _, ok := w.mapping(raw, "admin", adminKeys)
	if !ok || !f.has("address") {
		return nil
	}
	const path = "admin.address"
	n := resolve(f.value("address"))
	if n != nil && isNull(n) {
		w.errs.at(n, path, `missing value: must be host:port, or "" to disable the admin server`)
		return nil
	}
	s, n, ok := w.str(n, path)
	if !ok {
		return nil
	}
	admin.Address = s
	if s == "" {
		return nil // explicitly disabled
	}
	if err := checkAddress(s, listenAddress); err != nil {
		w.errs.at(n, path, "%v", err)
		return nil
	}
	return n
}

func (w *walker) decodeLog(raw *yaml.Node, log *Log) {
	f, _, ok := w.mapping(raw, "log", logKeys)
	if !ok {
		return
	}
	if v := f.value("format"); v != nil {
		if s, ok := w.enum(v, "log.format", logFormats); ok {
			log.Format = LogFormat(s)
		}
	}
	if v := f.value("level"); v != nil {
		if s, ok := w.enum(v, "log.level", logLevels); ok {
			log.Level = s
		}
	}
}

func (w *walker) decodeShutdown(raw *yaml.Node, sd *Shutdown) {
	f, _, ok := w.mapping(raw, "shutdown", shutdownKeys)
	if !ok {
		return
	}
	if v := f.value("drain_delay"); v != nil {
		if d, ok := w.duration(v, "shutdown.drain_delay", true); ok {
			sd.DrainDelay = d
		}
	}
	if v := f.value("timeout"); v != nil {
		if d, ok := w.duration(v, "shutdown.timeout", false); ok {
			sd.Timeout = d
		}
	}
}

func (w *walker) decodeListener(raw *yaml.Node, path string) (Listener, listenerSource) {
	l := Listener{
		Protocol:             DefaultProtocol,
		MaxConcurrentStreams: DefaultMaxConcurrentStreams,
		MaxMessageSize:       DefaultMaxMessageSize,
		IdleTimeout:          DefaultIdleTimeout,
		MaxConnections:       DefaultMaxConnections,
		AccessLog:            AccessLog{Format: DefaultAccessLogFormat, Buffer: DefaultAccessLogBuffer},
	}
	var src listenerSource
	f, m, ok := w.mapping(raw, path, listenerKeys)
	if m != nil {
		l.Pos = Pos{Line: m.Line, Col: m.Column}
	}
	if !ok {
		return l, src
	}
	var n *yaml.Node
	if w.require(&f, m, path, "name", "") {
		if l.Name, n, ok = w.name(f.value("name"), join(path, "name")); ok {
			src.name = nodePos(n)
		}
	}
	if w.require(&f, m, path, "address", " (host:port to listen on)") {
		if l.Address, n, ok = w.address(f.value("address"), join(path, "address"), listenAddress); ok {
			src.address = nodePos(n)
		}
	}
	if v := f.value("protocol"); v != nil {
		if s, ok := w.enum(v, join(path, "protocol"), protocols); ok {
			l.Protocol = Protocol(s)
		}
	}
	if v := f.value("routes"); v != nil {
		l.Routes = w.decodeRoutes(v, join(path, "routes"), l.Protocol)
	}
	// With routes, the cluster is optional: what no route matches fails.
	if len(l.Routes) > 0 && !f.has("cluster") || w.require(&f, m, path, "cluster", " (the cluster this listener forwards to, or routes)") {
		if v := f.value("cluster"); v != nil {
			if l.Cluster, n, ok = w.name(v, join(path, "cluster")); ok {
				src.cluster = nodePos(n)
			}
		}
	}
	if v := f.value("max_concurrent_streams"); v != nil {
		if n, ok := w.integer(v, join(path, "max_concurrent_streams"), 1, math.MaxUint32); ok {
			l.MaxConcurrentStreams = uint32(n)
		}
	}
	if v := f.value("max_message_size"); v != nil {
		if n, ok := w.size(v, join(path, "max_message_size")); ok {
			l.MaxMessageSize = int(n)
		}
	}
	if v := f.value("idle_timeout"); v != nil {
		if d, ok := w.duration(v, join(path, "idle_timeout"), false); ok {
			l.IdleTimeout = d
		}
	}
	if v := f.value("max_connections"); v != nil {
		if n, ok := w.integer(v, join(path, "max_connections"), 0, math.MaxInt32); ok {
			l.MaxConnections = int(n)
		}
	}
	if v := f.value("tls"); v != nil {
		l.TLS = w.decodeListenerTLS(v, join(path, "tls"))
	}
	if v := f.value("access_log"); v != nil {
		l.AccessLog = w.decodeAccessLog(v, join(path, "access_log"))
	}
	return l, src
}

// decodeAccessLog decodes a listener's access_log mapping; an empty one
// (or path "") is off.
func (w *walker) decodeAccessLog(raw *yaml.Node, path string) AccessLog {
	a := AccessLog{Format: DefaultAccessLogFormat, Buffer: DefaultAccessLogBuffer}
	f, _, ok := w.mapping(raw, path, accessLogKeys)
	if !ok {
		return a
	}
	if v := f.value("path"); v != nil {
		if s, n, ok := w.filePath(v, join(path, "path"), true); ok {
			a.Path, a.PathPos = s, nodePos(n)
		}
	}
	if v := f.value("format"); v != nil {
		if s, ok := w.enum(v, join(path, "format"), accessLogFormats); ok {
			a.Format = LogFormat(s)
		}
	}
	if v := f.value("buffer"); v != nil {
		if n, ok := w.integer(v, join(path, "buffer"), MinAccessLogBuffer, MaxAccessLogBuffer); ok {
			a.Buffer = int(n)
		}
	}
	return a
}

// decodeListenerTLS decodes a listener's tls mapping: one certificate
// (cert_file and key_file) or several (certificates), and the options.
func (w *walker) decodeListenerTLS(raw *yaml.Node, path string) *ListenerTLS {
	t := &ListenerTLS{MinVersion: DefaultTLSMinVersion, HandshakeTimeout: DefaultTLSHandshakeTimeout}
	if n := resolve(raw); n != nil && isNull(n) {
		w.errs.at(n, path, "missing value: needs cert_file and key_file, or certificates")
		return t
	}
	f, m, ok := w.mapping(raw, path, listenerTLSKeys)
	if m != nil {
		t.Pos = nodePos(m)
	}
	if !ok {
		return t
	}
	single := f.has("cert_file") || f.has("key_file")
	switch {
	case single && f.has("certificates"):
		w.errs.at(f.find("certificates", 0).key, join(path, "certificates"), "give cert_file and key_file, or certificates, not both")
	case single:
		if pair, ok := w.decodeCertPair(&f, m, path, "tls"); ok {
			t.Certificates = []CertificatePair{pair}
		}
	case f.has("certificates"):
		cpath := join(path, "certificates")
		items, seq, ok := w.sequence(f.value("certificates"), cpath)
		if ok && len(items) == 0 {
			w.errs.at(seq, cpath, "needs at least one certificate (cert_file and key_file)")
		}
		for i, item := range items {
			ipath := index(cpath, i)
			cf, cm, ok := w.mapping(item, ipath, certPairKeys)
			if !ok {
				continue
			}
			if pair, ok := w.decodeCertPair(&cf, cm, ipath, "tls"+ipath[len(path):]); ok {
				t.Certificates = append(t.Certificates, pair)
			}
		}
	default:
		w.errs.at(m, path, "needs cert_file and key_file, or certificates")
	}
	if v := f.value("client_ca_file"); v != nil {
		if s, n, ok := w.filePath(v, join(path, "client_ca_file"), true); ok {
			t.ClientCAFile, t.ClientCAPos = s, nodePos(n)
		}
	}
	if v := f.value("min_version"); v != nil {
		if s, ok := w.tlsVersion(v, join(path, "min_version")); ok {
			t.MinVersion = TLSVersion(s)
		}
	}
	if v := f.value("handshake_timeout"); v != nil {
		if d, ok := w.duration(v, join(path, "handshake_timeout"), false); ok {
			t.HandshakeTimeout = d
		}
	}
	return t
}

// decodeCertPair reads cert_file and key_file, both required, from f.
func (w *walker) decodeCertPair(f *fields, m *yaml.Node, path, field string) (CertificatePair, bool) {
	pair := CertificatePair{Field: field}
	ok := true
	if w.require(f, m, path, "cert_file", " (the PEM certificate chain, with key_file)") {
		s, n, good := w.filePath(f.value("cert_file"), join(path, "cert_file"), false)
		pair.CertFile, pair.CertPos, ok = s, nodePos(n), ok && good
	} else {
		ok = false
	}
	if w.require(f, m, path, "key_file", " (the PEM private key of cert_file)") {
		s, n, good := w.filePath(f.value("key_file"), join(path, "key_file"), false)
		pair.KeyFile, pair.KeyPos, ok = s, nodePos(n), ok && good
	} else {
		ok = false
	}
	return pair, ok
}

// filePath reads a file path; "" is allowed only when emptyOK (meaning
// none).
func (w *walker) filePath(raw *yaml.Node, path string, emptyOK bool) (string, *yaml.Node, bool) {
	s, n, ok := w.str(raw, path)
	if !ok {
		return "", n, false
	}
	if s == "" && !emptyOK {
		w.errs.at(n, path, "must be a file path, not empty")
		return "", n, false
	}
	if strings.ContainsRune(s, 0) {
		w.errs.at(n, path, "a file path cannot contain a NUL byte")
		return "", n, false
	}
	return s, n, true
}

// tlsVersion reads "1.2" or "1.3", quoted or not.
func (w *walker) tlsVersion(raw *yaml.Node, path string) (string, bool) {
	what := "one of " + strings.Join(tlsVersions, ", ")
	n, ok := w.scalar(raw, path, what)
	if !ok {
		return "", false
	}
	tag := n.ShortTag()
	if (tag != "!!str" && tag != "!!float") || !slices.Contains(tlsVersions, n.Value) {
		w.errs.at(n, path, "must be %s, not %s", what, describe(n))
		return "", false
	}
	return n.Value, true
}

func (w *walker) decodeCluster(raw *yaml.Node, path string) (Cluster, *yaml.Node) {
	c := Cluster{
		LBPolicy:       DefaultLBPolicy,
		PanicThreshold: DefaultPanicThreshold,
		HealthCheck:    checker.DefaultConfig(),
	}
	var nameNode *yaml.Node
	f, m, ok := w.mapping(raw, path, clusterKeys)
	if m != nil {
		c.Pos = Pos{Line: m.Line, Col: m.Column}
	}
	if !ok {
		return c, nil
	}
	if w.require(&f, m, path, "name", "") {
		c.Name, nameNode, ok = w.name(f.value("name"), join(path, "name"))
		if !ok {
			nameNode = nil
		}
	}
	if v := f.value("lb_policy"); v != nil {
		if s, ok := w.enum(v, join(path, "lb_policy"), lbPolicies); ok {
			c.LBPolicy = LBPolicy(s)
		}
	}
	if v := f.value("panic_threshold"); v != nil {
		if n, ok := w.integer(v, join(path, "panic_threshold"), 0, 100); ok {
			c.PanicThreshold = int(n)
		}
	}
	if v := f.value("discovery"); v != nil {
		c.Discovery = w.decodeDiscovery(v, join(path, "discovery"))
	}
	// With discovery, listed endpoints are optional: the cluster takes the
	// union of both.
	if f.has("discovery") {
		if v := f.value("endpoints"); v != nil {
			c.Endpoints = w.decodeEndpoints(v, join(path, "endpoints"), true)
		}
	} else if w.require(&f, m, path, "endpoints", ": a cluster needs at least one endpoint, or discovery") {
		c.Endpoints = w.decodeEndpoints(f.value("endpoints"), join(path, "endpoints"), false)
	}
	if v := f.value("health_check"); v != nil {
		w.decodeHealthCheck(v, join(path, "health_check"), &c.HealthCheck)
	}
	if v := f.value("outlier_detection"); v != nil {
		c.Outlier = w.decodeOutlier(v, join(path, "outlier_detection"))
	}
	if v := f.value("slow_start"); v != nil {
		c.SlowStart = w.decodeSlowStart(v, join(path, "slow_start"))
	}
	switch v := f.value("hash"); {
	case c.LBPolicy.Hashes():
		c.Hash = w.decodeHash(v, join(path, "hash"), resolve(f.value("lb_policy")), c.LBPolicy)
	case v != nil && f.has("lb_policy"):
		w.errs.at(resolve(v), join(path, "hash"), "only for lb_policy %s or %s, not %s", RingHash, Maglev, c.LBPolicy)
	case v != nil:
		w.errs.at(resolve(v), join(path, "hash"), "only for lb_policy %s or %s (the default is %s)", RingHash, Maglev, DefaultLBPolicy)
	}
	if v := f.value("tls"); v != nil {
		c.TLS = w.decodeClusterTLS(v, join(path, "tls"))
	}
	switch v := f.value("load_reports"); {
	case c.LBPolicy == WeightedRoundRobin && v != nil:
		c.LoadReports = w.decodeLoadReports(v, join(path, "load_reports"))
	case c.LBPolicy == WeightedRoundRobin:
		d := wrr.DefaultConfig()
		c.LoadReports = &d
	case v != nil && f.has("lb_policy"):
		w.errs.at(resolve(v), join(path, "load_reports"), "only for lb_policy %s, not %s", WeightedRoundRobin, c.LBPolicy)
	case v != nil:
		w.errs.at(resolve(v), join(path, "load_reports"), "only for lb_policy %s (the default is %s)", WeightedRoundRobin, DefaultLBPolicy)
	}
	return c, nameNode
}

// decodeHash decodes the hash section (raw, nil when absent) of a cluster
// whose lb_policy hashes over its defaults. A missing header is judged
// across sections, where the listeners are known (crossCheck); policyNode
// is the lb_policy value, where it is reported when there is no section.
func (w *walker) decodeHash(raw *yaml.Node, path string, policyNode *yaml.Node, policy LBPolicy) *Hash {
	h := &Hash{Pos: nodePos(policyNode)}
	if policy == RingHash {
		h.RingSize = ringhash.DefaultRingSize
	}
	if raw == nil {
		return h
	}
	f, node, ok := w.mapping(raw, path, hashKeys)
	if node != nil {
		h.Pos = nodePos(node)
	}
	if !ok {
		h.Pos = Pos{} // reported already
		return h
	}
	if v := f.value("header"); v != nil {
		h.Pos = Pos{} // there is one: only its value can be wrong
		if s, n, ok := w.str(v, join(path, "header")); ok {
			if err := checkMetadataKey(s); err != nil {
				w.errs.at(n, join(path, "header"), "%v", err)
			} else {
				h.Header = strings.ToLower(s)
			}
		}
	}
	if v := f.value("ring_size"); v != nil {
		if policy != RingHash {
			w.errs.at(f.find("ring_size", 0).key, join(path, "ring_size"), "only for lb_policy %s (%s's table has %d entries)", RingHash, policy, maglev.TableSize)
		} else if n, ok := w.integer(v, join(path, "ring_size"), 1, ringhash.MaxRingSize); ok {
			h.RingSize = int(n)
		}
	}
	return h
}

// decodeClusterTLS decodes a cluster's tls mapping. Every field is
// optional: `tls: {}` is TLS verified against the system roots, with each
// endpoint's host as the server name.
func (w *walker) decodeClusterTLS(raw *yaml.Node, path string) *ClusterTLS {
	t := &ClusterTLS{}
	if n := resolve(raw); n != nil && isNull(n) {
		w.errs.at(n, path, "missing value: a mapping (tls: {} for TLS verified against the system roots)")
		return t
	}
	f, m, ok := w.mapping(raw, path, clusterTLSKeys)
	if m != nil {
		t.Pos = nodePos(m)
	}
	if !ok {
		return t
	}
	file := func(key string, s *string, pos *Pos) {
		if v := f.value(key); v != nil {
			if p, n, ok := w.filePath(v, join(path, key), true); ok {
				*s, *pos = p, nodePos(n)
			}
		}
	}
	file("ca_file", &t.CAFile, &t.CAPos)
	file("cert_file", &t.CertFile, &t.CertPos)
	file("key_file", &t.KeyFile, &t.KeyPos)
	switch {
	case t.CertFile != "" && t.KeyFile == "" && f.has("cert_file"):
		w.errs.at(f.find("cert_file", 0).key, join(path, "key_file"), "missing: cert_file needs key_file (the PEM private key of the client certificate)")
	case t.KeyFile != "" && t.CertFile == "" && f.has("key_file"):
		w.errs.at(f.find("key_file", 0).key, join(path, "cert_file"), "missing: key_file needs cert_file (the PEM client certificate chain)")
	}
	if v := f.value("server_name"); v != nil {
		if s, n, ok := w.str(v, join(path, "server_name")); ok {
			if err := checkServerName(s); err != nil {
				w.errs.at(n, join(path, "server_name"), "%v", err)
			} else {
				t.ServerName = s
			}
		}
	}
	if v := f.value("insecure_skip_verify"); v != nil {
		if b, ok := w.boolean(v, join(path, "insecure_skip_verify")); ok {
			t.InsecureSkipVerify = b
		}
	}
	return t
}

// checkServerName accepts a DNS name or an IP address: what a certificate
// can be verified against.
func checkServerName(s string) error {
	if s == "" || net.ParseIP(s) != nil {
		return nil
	}
	if len(s) > 253 {
		return fmt.Errorf("must be a host name or an IP address, not %d characters long", len(s))
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("must be a host name or an IP address, not %q (empty or over-long label)", s)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("must be a host name or an IP address, not %q (no port, scheme or path: only the name)", s)
			}
		}
	}
	return nil
}

// decodeLoadReports decodes load_reports over wrr.DefaultConfig, then lets
// wrr.Config.Problems judge it, at the field each complaint is about.
func (w *walker) decodeLoadReports(raw *yaml.Node, path string) *wrr.Config {
	c := wrr.DefaultConfig()
	f, node, ok := w.mapping(raw, path, loadReportKeys)
	if !ok {
		return &c
	}
	at := map[string]*yaml.Node{}
	bad := false
	for _, d := range []struct {
		key string
		to  *time.Duration
	}{{"period", &c.Period}, {"blackout", &c.Blackout}, {"expiration", &c.Expiration}} {
		v := f.value(d.key)
		if v == nil {
			continue
		}
		at[d.key] = resolve(v)
		// Zero is judged by the rules below, like the other values.
		if x, ok := w.duration(v, join(path, d.key), true); ok {
			*d.to = x
		} else {
			bad = true
		}
	}
	if v := f.value("error_penalty"); v != nil {
		at["error_penalty"] = resolve(v)
		if x, ok := w.number(v, join(path, "error_penalty")); ok {
			c.ErrorPenalty = x
		} else {
			bad = true
		}
	}
	// Values that did not parse are reported already.
	if !bad {
		w.fieldProblems(node, at, path, c.Problems())
	}
	return &c
}

// decodeSlowStart decodes slow_start over slowstart.DefaultConfig, then
// lets slowstart.Config.Problems, the one set of rules, judge it, at the
// field each complaint is about.
func (w *walker) decodeSlowStart(raw *yaml.Node, path string) *slowstart.Config {
	c := slowstart.DefaultConfig()
	f, node, ok := w.mapping(raw, path, slowStartKeys)
	if !ok {
		return &c
	}
	at := map[string]*yaml.Node{}
	bad := false
	if v := f.value("window"); v != nil {
		at["window"] = resolve(v)
		// A zero window is judged by the rules below, like the others.
		if d, ok := w.duration(v, join(path, "window"), true); ok {
			c.Window = d
		} else {
			bad = true
		}
	}
	if v := f.value("aggression"); v != nil {
		at["aggression"] = resolve(v)
		if x, ok := w.number(v, join(path, "aggression")); ok {
			c.Aggression = x
		} else {
			bad = true
		}
	}
	if v := f.value("min_weight_percent"); v != nil {
		at["min_weight_percent"] = resolve(v)
		if n, ok := w.integer(v, join(path, "min_weight_percent"), math.MinInt32, math.MaxInt32); ok {
			c.MinWeightPercent = int(n)
		} else {
			bad = true
		}
	}
	// Values that did not parse are reported already.
	if !bad {
		w.fieldProblems(node, at, path, c.Problems())
	}
	return &c
}

// decodeOutlier decodes outlier_detection over outlier.DefaultConfig,
// then lets outlier.Config.Problems, the one set of rules, judge it; its
// complaints are reported at the field they are about.
func (w *walker) decodeOutlier(raw *yaml.Node, path string) *outlier.Config {
	c := outlier.DefaultConfig()
	f, node, ok := w.mapping(raw, path, outlierKeys)
	if !ok {
		return &c
	}
	at := map[string]*yaml.Node{}
	field := func(key string) *yaml.Node {
		v := f.value(key)
		if v != nil {
			at[key] = resolve(v)
		}
		return v
	}
	ints := []struct {
		key    string
		lo, hi int64
		dst    *int
	}{
		{"consecutive_failures", 0, math.MaxInt32, &c.ConsecutiveFailures},
		{"max_ejection_percent", 0, 100, &c.MaxEjectionPercent},
		{"failure_percentage", 0, 100, &c.FailurePercentage},
		{"minimum_requests", 1, math.MaxInt32, &c.MinimumRequests},
	}
	bad := false
	for _, it := range ints {
		if v := field(it.key); v != nil {
			if n, ok := w.integer(v, join(path, it.key), it.lo, it.hi); ok {
				*it.dst = int(n)
			} else {
				bad = true
			}
		}
	}
	durations := []struct {
		key string
		dst *time.Duration
	}{
		{"interval", &c.Interval}, {"base_ejection_time", &c.BaseEjectionTime}, {"max_ejection_time", &c.MaxEjectionTime},
	}
	for _, it := range durations {
		if v := field(it.key); v != nil {
			if d, ok := w.duration(v, join(path, it.key), false); ok {
				*it.dst = d
			} else {
				bad = true
			}
		}
	}
	// Values that did not parse are reported already; the rules judge
	// the section only when every field it names was read.
	if !bad {
		w.fieldProblems(node, at, path, c.Problems())
	}
	return &c
}

// decodeEndpoints reads a cluster's listed endpoints; the list may be empty
// when the cluster also discovers endpoints.
func (w *walker) decodeEndpoints(raw *yaml.Node, path string, emptyOK bool) []Endpoint {
	items, seq, ok := w.sequence(raw, path)
	if !ok {
		return nil
	}
	if len(items) == 0 && !emptyOK {
		w.errs.at(seq, path, "a cluster needs at least one endpoint, or discovery")
		return nil
	}
	endpoints := make([]Endpoint, 0, len(items))
	seen := make(map[string]int, len(items)) // address key -> line of first use
	for i, item := range items {
		ep, addr := w.decodeEndpoint(item, index(path, i))
		endpoints = append(endpoints, ep)
		if addr == nil {
			continue
		}
		key := addressKey(ep.Address)
		if first, dup := seen[key]; dup {
			w.errs.at(addr, join(index(path, i), "address"), "duplicate endpoint %s in this cluster (first at line %d)", quote(ep.Address), first)
			continue
		}
		seen[key] = addr.Line
	}
	return endpoints
}

func (w *walker) decodeEndpoint(raw *yaml.Node, path string) (Endpoint, *yaml.Node) {
	ep := Endpoint{Weight: DefaultWeight}
	if n := resolve(raw); n != nil && n.Kind == yaml.ScalarNode && !isNull(n) {
		w.errs.at(n, path, "must be a mapping like {address: %s}, not %s", quote(n.Value), describe(n))
		return ep, nil
	}
	f, m, ok := w.mapping(raw, path, endpointKeys)
	if m != nil {
		ep.Pos = Pos{Line: m.Line, Col: m.Column}
	}
	if !ok {
		return ep, nil
	}
	var addr *yaml.Node
	if w.require(&f, m, path, "address", " (host:port of the backend)") {
		ep.Address, addr, ok = w.address(f.value("address"), join(path, "address"), endpointAddress)
		if !ok {
			addr = nil
		}
	}
	if v := f.value("weight"); v != nil {
		if n, ok := w.integer(v, join(path, "weight"), 1, MaxWeight); ok {
			ep.Weight = uint32(n)
		}
	}
	return ep, addr
}

// decodeHealthCheck decodes health_check into hc, which holds the
// checker's defaults: each field the file names is read as its type
// requires, then checker.Config.Validate, the one set of rules, judges the
// values; its complaints are reported at the field they are about.
func (w *walker) decodeHealthCheck(raw *yaml.Node, path string, hc *checker.Config) {
	f, node, ok := w.mapping(raw, path, healthCheckKeys)
	if !ok {
		return
	}
	at := map[string]*yaml.Node{}
	field := func(key string) *yaml.Node {
		v := f.value(key)
		if v != nil {
			at[key] = resolve(v)
		}
		return v
	}
	if v := field("mode"); v != nil {
		if s, ok := w.enum(v, join(path, "mode"), checkModes); ok {
			hc.Mode = checker.Mode(s)
		}
	}
	if v := field("service"); v != nil {
		if s, _, ok := w.str(v, join(path, "service")); ok {
			hc.Service = s
		}
	}
	if v := field("interval"); v != nil {
		if d, ok := w.duration(v, join(path, "interval"), false); ok {
			hc.Interval = d
		}
	}
	if v := field("timeout"); v != nil {
		if d, ok := w.duration(v, join(path, "timeout"), false); ok {
			hc.Timeout = d
		}
	}
	if v := field("jitter"); v != nil {
		if j, ok := w.jitter(v, join(path, "jitter")); ok {
			hc.Jitter = j
		}
	}
	if v := field("unhealthy_threshold"); v != nil {
		if n, ok := w.integer(v, join(path, "unhealthy_threshold"), 1, math.MaxInt32); ok {
			hc.Thresholds.Unhealthy = int(n)
		}
	}
	if v := field("healthy_threshold"); v != nil {
		if n, ok := w.integer(v, join(path, "healthy_threshold"), 1, math.MaxInt32); ok {
			hc.Thresholds.Healthy = int(n)
		}
	}
	if v := field("on_unimplemented"); v != nil {
		if s, ok := w.enum(v, join(path, "on_unimplemented"), onUnimplementeds); ok {
			hc.OnUnimplemented = checker.OnUnimplemented(s)
		}
	}
	if v := field("liveness"); v != nil {
		if s, ok := w.enum(v, join(path, "liveness"), livenesses); ok {
			hc.Liveness = checker.Liveness(s)
		}
	}
	w.fieldProblems(node, at, path, hc.Problems())
}

// fieldProblems reports the problems a section's own validator found, each
// at the node of its field (at, by field name), or at the section's node
// for a field the file left out.
func (w *walker) fieldProblems(node *yaml.Node, at map[string]*yaml.Node, path string, problems []*fielderr.Error) {
	for _, fe := range problems {
		n := at[fe.Field]
		if n == nil {
			n = node
		}
		w.errs.at(n, join(path, fe.Field), "%v", fe.Err)
	}
}

// maxSuggestWork bounds the name comparisons made for "did you mean"
// suggestions of unknown cluster references in one file.
const maxSuggestWork = 1_000_000

// crossCheck reports what no single value shows: duplicate names and
// listen addresses, and listeners naming a cluster that does not exist.
func (w *walker) crossCheck(cfg *Config, src *sources) {
	clusterNames := make(map[string]int, len(cfg.Clusters)) // name -> line
	names := make([]string, 0, len(cfg.Clusters))
	for i, at := range src.clusters {
		if at == (Pos{}) {
			continue
		}
		name := cfg.Clusters[i].Name
		if first, dup := clusterNames[name]; dup {
			w.errs.atPos(at, join(index("clusters", i), "name"), "duplicate cluster name %s (first at line %d)", quote(name), first)
			continue
		}
		clusterNames[name] = at.Line
		names = append(names, name)
	}

	w.checkHashHeaders(cfg, clusterNames)

	listenerNames := make(map[string]int, len(cfg.Listeners))
	suggestWork := 0
	// Paths are built only for the messages: this runs on every reload.
	type bound struct {
		listener int // index, or -1 for admin.address
		line     int
	}
	addresses := make(map[string]bound, len(cfg.Listeners)+1)
	if src.admin != (Pos{}) && !isEphemeral(cfg.Admin.Address) {
		addresses[addressKey(cfg.Admin.Address)] = bound{-1, src.admin.Line}
	}
	for i, ls := range src.listeners {
		l := &cfg.Listeners[i]
		path := func() string { return index("listeners", i) }
		if ls.name != (Pos{}) {
			if first, dup := listenerNames[l.Name]; dup {
				w.errs.atPos(ls.name, join(path(), "name"), "duplicate listener name %s (first at line %d)", quote(l.Name), first)
			} else {
				listenerNames[l.Name] = ls.name.Line
			}
		}
		if ls.address != (Pos{}) && !isEphemeral(l.Address) {
			key := addressKey(l.Address)
			if first, dup := addresses[key]; dup {
				what := "admin.address"
				if first.listener >= 0 {
					what = join(index("listeners", first.listener), "address")
				}
				w.errs.atPos(ls.address, join(path(), "address"), "address %s is already used by %s (line %d)", quote(l.Address), what, first.line)
			} else {
				addresses[key] = bound{i, ls.address.Line}
			}
		}
		// Suggestions compare with every cluster name: bound their total
		// cost for files with huge numbers of both.
		unknown := func(name string) string {
			if suggestWork += len(names); suggestWork <= maxSuggestWork {
				return didYouMean(name, names)
			}
			return ""
		}
		if ls.cluster != (Pos{}) {
			if _, ok := clusterNames[l.Cluster]; !ok {
				w.errs.atPos(ls.cluster, join(path(), "cluster"), "unknown cluster %s%s", quote(l.Cluster), unknown(l.Cluster))
			}
		}
		if len(l.Routes) > 0 {
			w.checkRoutes(i, l, clusterNames, unknown)
		}
	}
}

// checkHashHeaders reports each ring_hash or maglev cluster a grpc
// listener forwards to without a hash.header: its RPCs would all be
// keyless, hence random, which is surely not what the policy was chosen
// for. (tcp listeners hash
// the client's IP address and need no header.)
func (w *walker) checkHashHeaders(cfg *Config, clusterNames map[string]int) {
	var needs map[string]string // cluster -> the first grpc listener using it
	for _, l := range cfg.Listeners {
		if l.Protocol != ProtocolGRPC {
			continue
		}
		use := func(cluster string) {
			if _, ok := clusterNames[cluster]; !ok {
				return
			}
			if needs == nil {
				needs = map[string]string{}
			}
			if _, seen := needs[cluster]; !seen {
				needs[cluster] = l.Name
			}
		}
		use(l.Cluster)
		for _, r := range l.Routes {
			use(r.Cluster) // a route forwards RPCs as the listener does
		}
	}
	for i := range cfg.Clusters {
		c := &cfg.Clusters[i]
		if c.Hash == nil || c.Hash.Header != "" || c.Hash.Pos == (Pos{}) {
			continue
		}
		if l, ok := needs[c.Name]; ok {
			w.errs.atPos(c.Hash.Pos, join(index("clusters", i), "hash.header"),
				"required: grpc listener %s forwards to this %s cluster, which places each RPC by the value of this gRPC metadata key", quote(l), c.LBPolicy)
		}
	}
}

// isEphemeral reports whether a listen address asks for port 0, which never
// collides with another.
func isEphemeral(addr string) bool {
	_, port, err := splitHostPort(addr)
	return err == nil && allDigits(port) && trimZeros(port) == ""
}

func trimZeros(s string) string {
	for len(s) > 0 && s[0] == '0' {
		s = s[1:]
	}
	return s
}
