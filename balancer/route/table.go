package route

import (
	"strconv"
	"strings"
	"time"

	"github.com/vigil-proxy/vigil/balancer"
)

// Route is one route of a table, as a listener's configuration gives it.
type Route struct {
	// Name is reported in metrics and the access log; "" makes the route's
	// label its index in the table.
	Name    string
	Match   Match
	Cluster *balancer.Cluster
	// Timeout, when positive, ends an RPC that has not finished by then
	// (gRPC routes).
	Timeout time.Duration
}

// Entry is a route of a built table, or its default: what a lookup
// returns. Entries are never modified.
type Entry struct {
	// Index is the route's place in the table, -1 for the default.
	Index int
	// Name is the configured name, "" for none (and for the default).
	Name string
	// Label names the route in metrics and logs, bounded by the
	// configuration: the name, else the index ("0", "1", ...); "" for the
	// default.
	Label   string
	Match   Match
	Cluster *balancer.Cluster
	Timeout time.Duration

	// authHash is hostHash(Match.Authority) for an exact authority: a
	// lookup compares it before the strings.
	authHash uint32
}

// hostHash is FNV-1a over s in lower case.
func hostHash(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}

// Table is an immutable, compiled route table. The zero Table and a nil
// *Table route nothing.
type Table struct {
	entries []Entry
	def     *Entry
	// byService holds, for each service some route names, the indices of
	// the routes a call to that service may match (those naming it and
	// those naming no service), in table order; anyService those naming no
	// service, for every other service.
	byService  map[string][]int32
	anyService []int32
	// hasSNI: some route matches on SNI.
	hasSNI bool
}

// New builds a table of routes, in order, with def as the default
// cluster for what no route matches (nil: none).
func New(routes []Route, def *balancer.Cluster) *Table {
	t := &Table{entries: make([]Entry, len(routes)), byService: map[string][]int32{}}
	for i, r := range routes {
		label := r.Name
		if label == "" {
			label = strconv.Itoa(i)
		}
		t.entries[i] = Entry{Index: i, Name: r.Name, Label: label, Match: r.Match, Cluster: r.Cluster, Timeout: r.Timeout}
		if a := r.Match.Authority; a != "" && !isWildcard(a) {
			t.entries[i].authHash = hostHash(a)
		}
		if r.Match.Service != "" {
			t.byService[r.Match.Service] = nil
		}
		t.hasSNI = t.hasSNI || r.Match.SNI != ""
	}
	for i, r := range routes {
		if r.Match.Service == "" {
			t.anyService = append(t.anyService, int32(i))
		}
		for svc, list := range t.byService {
			if r.Match.Service == "" || r.Match.Service == svc {
				t.byService[svc] = append(list, int32(i))
			}
		}
	}
	if def != nil {
		t.def = &Entry{Index: -1, Cluster: def}
	}
	return t
}

// Default is the default entry (the listener's cluster), or nil.
func (t *Table) Default() *Entry {
	if t == nil {
		return nil
	}
	return t.def
}

// Entries are the table's routes in order (not the default). The slice is
// the table's own: do not modify it.
func (t *Table) Entries() []Entry {
	if t == nil {
		return nil
	}
	return t.entries
}

// Len is the number of routes, the default aside.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

// Clusters calls f for the cluster of every route and of the default.
func (t *Table) Clusters(f func(*balancer.Cluster)) {
	for i := range t.Entries() {
		f(t.entries[i].Cluster)
	}
	if d := t.Default(); d != nil {
		f(d.Cluster)
	}
}

// SplitPath splits a gRPC :path "/pkg.Service/Method" into its service
// and method; ok is false when path is not of that form.
func SplitPath(path string) (service, method string, ok bool) {
	if len(path) < 4 || path[0] != '/' {
		return "", "", false
	}
	i := strings.IndexByte(path[1:], '/')
	if i <= 0 || 1+i+1 == len(path) {
		return "", "", false
	}
	return path[1 : 1+i], path[1+i+1:], true
}

// GRPC returns the route of a gRPC call with :path path and :authority
// authority (a port in it is ignored), or the default when none matches,
// or nil when there is no default either. It neither locks nor allocates.
func (t *Table) GRPC(path, authority string) *Entry {
	if t == nil {
		return nil
	}
	if len(t.entries) == 0 {
		return t.def
	}
	service, method, ok := SplitPath(path)
	candidates := t.anyService
	if ok {
		if list, named := t.byService[service]; named {
			candidates = list
		}
	}
	host := HostOf(authority)
	upper, hash := false, uint32(0)
	if len(candidates) > 0 {
		upper, hash = hasUpper(host), hostHash(host)
	}
	for _, i := range candidates {
		e := &t.entries[i]
		m := &e.Match
		if m.Method != "" && (!ok || m.Method != method) {
			continue
		}
		if e.authHash != 0 && e.authHash != hash || m.Authority != "" && !matchHost(m.Authority, host, upper) {
			continue
		}
		if m.SNI != "" {
			continue // a tcp route: never a gRPC call's
		}
		return e
	}
	return t.def
}

// HasSNI reports whether some route matches on SNI: a tcp listener then
// reads the ClientHello before it picks a cluster.
func (t *Table) HasSNI() bool { return t != nil && t.hasSNI }

// SNI returns the route of a connection whose TLS ClientHello named
// serverName ("" when it named none), or the default when none matches,
// or nil. Only routes matching on SNI alone are considered. It neither
// locks nor allocates.

func (t *Table) SNI(serverName string) *Entry {
	if t == nil {
		return nil
	}
	if t.hasSNI && serverName != "" {
		upper := hasUpper(serverName)
		for i := range t.entries {
			e := &t.entries[i]
			if e.Match.SNI != "" && matchHost(e.Match.SNI, serverName, upper) {
				return e
			}
		}
	}
	return t.def
}
