package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/vigil-proxy/vigil/internal/metrics"
	"github.com/vigil-proxy/vigil/internal/state"
)

// The status page's view of the store (see page.go for the page itself).
//
// One hub per Server follows the store from Serve to Shutdown, so that
// the page can show 15 minutes of every endpoint's health the moment it
// opens. It holds, for each cluster and endpoint, the row /clusters would
// print for it (as JSON, so that fields added to Cluster and Endpoint
// reach the page without touching the hub), the version of the hub at
// which that row last changed, and the endpoint's health over the
// timeline window. Page streams (pageSub) read it under mu and send what
// changed after the version they hold: a state-based sync, like a
// Kubernetes watch from a resourceVersion, so that a stream that falls
// behind or reconnects catches up by sending each row once, with its
// latest value, however many times it changed meanwhile.
//
// Goroutines: run (owned by the Server: started by Serve, stopped and
// waited for by Shutdown) is the only writer. Lock order: hub.mu is a
// leaf; nothing else is locked while it is held, except the Stats and
// Traffic callbacks, which run before it is taken.

const (
	// pageTick is the coalescing interval: the hub reads the store and a
	// stream sends at most once per tick.
	pageTick = 250 * time.Millisecond
	// pageStatsEvery is how often, while a page is open, the figures that
	// change with every probe or RPC (latency, in flight, last probe) are
	// read again for every endpoint.
	pageStatsEvery = 2 * time.Second
	// pageTrafficEvery is the sampling period of the per-cluster RPC
	// rates, and pageTrafficPoints how many samples are kept (10 minutes).
	pageTrafficEvery  = 5 * time.Second
	pageTrafficPoints = 120
	// pageWindow is how far back the timeline reaches.
	pageWindow = 15 * time.Minute
	// pageMaxSpans bounds the spans kept per endpoint; past it, runs of
	// short spans are merged into one "flapping" span.
	pageMaxSpans = 256
	// pageFlapQuantum: on the wire, consecutive spans shorter than this
	// (one pixel of a 300-pixel timeline) are drawn as one flapping span.
	pageFlapQuantum = pageWindow / 300
	// pageLogKept is how many eviction-log records the hub keeps for the
	// page's tail.
	pageLogKept = 500
)

// Span health codes on the wire: one letter per health, f for a run of
// transitions too short to draw one by one.
const (
	spanPending   = 'p'
	spanHealthy   = 'h'
	spanUnhealthy = 'u'
	spanDraining  = 'd'
	spanFlapping  = 'f'
)

var spanCodes = map[string]byte{
	"pending": spanPending, "healthy": spanHealthy, "unhealthy": spanUnhealthy, "draining": spanDraining,
}

// pageHubOptions configure a pageHub.
type pageHubOptions struct {
	store *state.Store
	// build turns a cluster's rows into what /clusters prints for it.
	build func(*state.Cluster, []*state.Endpoint) Cluster
	// traffic reads a cluster's RPC counters; nil: no rates.
	traffic func(cluster string) (metrics.ClusterTraffic, bool)
	now     func() time.Time
	log     *slog.Logger
}

type pageHub struct {
	opts pageHubOptions
	// epoch names this hub (and so this vigil process): a stream that
	// resumes with another epoch's id gets a full snapshot.
	epoch string

	mu      sync.Mutex
	version uint64
	changed chan struct{} // closed and replaced when version moves
	// clients counts the open page streams; stats are refreshed only
	// while there is one.
	clients  int
	clusters map[string]*hubCluster
	names    []string // sorted
	namesVer uint64
	nextID   uint64
	log      []hubRecord // ring, oldest first
	lastSeq  uint64      // of the newest event read
	// ready is closed once the hub has read the store the first time: a
	// stream's snapshot waits for it.
	ready     chan struct{}
	readyOnce sync.Once
	// joined is closed when a page stream opens (nil: nobody waits).
	joined chan struct{}
	// notes are the hint and error of each endpoint's latest
	// eviction-log record, which the store does not hold.
	notes map[endpointKey]hubNote
}

type endpointKey struct{ cluster, address string }

type hubCluster struct {
	name string
	// row is the cluster's /clusters object without its endpoints.
	row        json.RawMessage
	ver        uint64 // when row or traffic last changed
	membersVer uint64 // when an endpoint was added or removed
	endpoints  map[string]*hubEndpoint
	order      []*hubEndpoint // by address, as /clusters lists them
	traffic    []trafficPoint // oldest first
	lastCount  *metrics.ClusterTraffic
	lastAt     time.Time
}

type trafficPoint struct {
	At     int64   // Unix milliseconds, end of the sample
	RPS    float64 // RPCs per second over the sample
	Failed float64 // failed RPCs per second
}

func (p trafficPoint) MarshalJSON() ([]byte, error) {
	return json.Marshal([3]any{p.At, round2(p.RPS), round2(p.Failed)})
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

type hubEndpoint struct {
	id      uint64
	cluster string
	address string
	// row is the endpoint's /clusters object (with hint and error added
	// from the eviction log); state is the same without the figures that
	// change with every probe, to tell a change of health from one of
	// latency.
	row      json.RawMessage
	state    []byte
	ver      uint64 // row changed
	stateVer uint64 // state changed
	spans    []span
	// health and since are the latest seen; seenAt is when.
	health string
	since  time.Time
	seenAt time.Time
}

type span struct {
	start time.Time
	code  byte
}

type hubRecord struct {
	ver  uint64
	seq  uint64
	data json.RawMessage // the record exactly as /events sends it
}

type hubNote struct {
	hint, err string
	at        time.Time
}

func newPageHub(opts pageHubOptions) *pageHub {
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.log == nil {
		opts.log = slog.New(slog.DiscardHandler)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &pageHub{
		opts:     opts,
		epoch:    hex.EncodeToString(b[:]),
		changed:  make(chan struct{}),
		ready:    make(chan struct{}),
		clusters: map[string]*hubCluster{},
		notes:    map[endpointKey]hubNote{},
	}
}

// run follows the store until ctx ends.
func (h *pageHub) run(ctx context.Context) {
	var (
		clustersWS memdb.WatchSet
		eventsWS   memdb.WatchSet
		clusterWS  = map[string]memdb.WatchSet{}
		lastStats  time.Time
		nextSample = h.opts.now().Add(pageTrafficEvery)
	)
	for {
		now := h.opts.now()
		h.mu.Lock()
		clients := h.clients
		h.mu.Unlock()
		statsDue := clients > 0 && now.Sub(lastStats) >= pageStatsEvery
		sampleDue := !now.Before(nextSample)

		snap := h.opts.store.Snapshot()
		var dirty []string
		if clustersWS == nil || fired(clustersWS) || statsDue {
			clustersWS = memdb.NewWatchSet()
			rows, err := snap.Clusters(clustersWS)
			if err != nil {
				h.opts.log.Error("admin: status page: read clusters", "err", err)
			}
			dirty = h.syncClusters(rows, clusterWS)
		}
		for name, ws := range clusterWS {
			if statsDue || fired(ws) {
				dirty = append(dirty, name)
			}
		}
		if statsDue {
			lastStats = now
		}
		var evs []*state.Event
		if eventsWS == nil || fired(eventsWS) {
			eventsWS = memdb.NewWatchSet()
			var err error
			if evs, err = snap.EventsAfter(eventsWS, h.readSeq()); err != nil {
				h.opts.log.Error("admin: status page: read events", "err", err)
			}
		}
		var traffic map[string]metrics.ClusterTraffic
		if sampleDue {
			nextSample = now.Add(pageTrafficEvery)
			traffic = h.readTraffic()
		}
		// Rows are built (with their Stats calls) before the hub's lock
		// is taken.
		built := h.buildClusters(snap, uniq(dirty), clusterWS)
		h.apply(now, built, evs, traffic)
		h.readyOnce.Do(func() { close(h.ready) })

		// Wait for a change, for a periodic job, or for the end; then
		// wait out the rest of the tick, so that a burst of changes is
		// read once.
		ws := memdb.NewWatchSet()
		for _, w := range append([]memdb.WatchSet{clustersWS, eventsWS}, slices.Collect(maps.Values(clusterWS))...) {
			for ch := range w {
				ws.Add(ch)
			}
		}
		ws.Add(h.clientJoined()) // a page that opens starts the stats refresh
		wake := nextSample
		if clients > 0 {
			wake = minTime(wake, lastStats.Add(pageStatsEvery))
		}
		wait, cancel := context.WithDeadline(ctx, wake)
		_ = ws.WatchCtx(wait)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(pageTick):
		}
	}
}

// fired reports whether one of ws's channels is closed.
func fired(ws memdb.WatchSet) bool {
	for ch := range ws {
		select {
		case <-ch:
			return true
		default:
		}
	}
	return false
}

func uniq(names []string) []string {
	sort.Strings(names)
	return slices.Compact(names)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func (h *pageHub) readSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastSeq
}

// syncClusters adds and removes clusters after the cluster list changed,
// and returns the clusters to read again (all of them).
func (h *pageHub) syncClusters(rows []*state.Cluster, clusterWS map[string]memdb.WatchSet) []string {
	names := make([]string, 0, len(rows))
	present := map[string]bool{}
	for _, r := range rows {
		names = append(names, r.Name)
		present[r.Name] = true
		if _, ok := clusterWS[r.Name]; !ok {
			clusterWS[r.Name] = nil // read below
		}
	}
	for name := range clusterWS {
		if !present[name] {
			delete(clusterWS, name)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !equalStrings(names, h.names) {
		h.bump()
		h.names = names
		h.namesVer = h.version
		for name := range h.clusters {
			if !present[name] {
				delete(h.clusters, name)
			}
		}
		for k := range h.notes {
			if !present[k.cluster] {
				delete(h.notes, k)
			}
		}
	}
	return slices.Clone(names)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// buildClusters reads the named clusters from snap as /clusters would
// print them, renewing their watch sets.
func (h *pageHub) buildClusters(snap state.Txn, names []string, clusterWS map[string]memdb.WatchSet) []Cluster {
	out := make([]Cluster, 0, len(names))
	for _, name := range names {
		if _, ok := clusterWS[name]; !ok {
			continue
		}
		ws := memdb.NewWatchSet()
		row, err := snap.Cluster(ws, name)
		if err != nil || row == nil {
			clusterWS[name] = ws
			continue
		}
		eps, err := snap.EndpointsByCluster(ws, name)
		if err != nil {
			h.opts.log.Error("admin: status page: read endpoints", "cluster", name, "err", err)
			continue
		}
		clusterWS[name] = ws
		out = append(out, h.opts.build(row, eps))
	}
	return out
}

func (h *pageHub) readTraffic() map[string]metrics.ClusterTraffic {
	if h.opts.traffic == nil {
		return nil
	}
	h.mu.Lock()
	names := append([]string(nil), h.names...)
	h.mu.Unlock()
	out := make(map[string]metrics.ClusterTraffic, len(names))
	for _, n := range names {
		t, _ := h.opts.traffic(n)
		out[n] = t
	}
	return out
}

// apply folds what run read into the hub, under one version.
func (h *pageHub) apply(now time.Time, built []Cluster, evs []*state.Event, traffic map[string]metrics.ClusterTraffic) {
	recs := make([]hubRecord, 0, len(evs))
	var notes []struct {
		k endpointKey
		n hubNote
	}
	for _, ev := range evs {
		data, err := renderEvent(ev)
		if err != nil {
			continue
		}
		recs = append(recs, hubRecord{seq: ev.Seq, data: data})
		if k, n, ok := eventNote(ev); ok {
			notes = append(notes, struct {
				k endpointKey
				n hubNote
			}{k, n})
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	next := h.version + 1
	changed := false
	for _, n := range notes {
		h.notes[n.k] = n.n
	}
	if len(evs) > 0 {
		h.lastSeq = evs[len(evs)-1].Seq
	}
	for _, r := range recs {
		r.ver = next
		h.log = append(h.log, r)
		changed = true
	}
	if over := len(h.log) - pageLogKept; over > 0 {
		h.log = append(h.log[:0], h.log[over:]...)
	}
	for i := range built {
		if h.applyCluster(now, &built[i], next) {
			changed = true
		}
	}
	for name, t := range traffic {
		if c := h.clusters[name]; c != nil && c.sample(now, t) {
			c.ver = next
			changed = true
		}
	}
	if changed {
		h.bump()
	}
}

// bump moves the version and wakes the streams; h.mu is held.
func (h *pageHub) bump() {
	h.version++
	close(h.changed)
	h.changed = make(chan struct{})
}

// applyCluster folds one cluster's fresh rows in at version ver and
// reports whether anything changed; h.mu is held.
func (h *pageHub) applyCluster(now time.Time, c *Cluster, ver uint64) bool {
	hc := h.clusters[c.Name]
	changed := false
	if hc == nil {
		hc = &hubCluster{name: c.Name, endpoints: map[string]*hubEndpoint{}, membersVer: ver}
		h.clusters[c.Name] = hc
		changed = true
	}
	eps := c.Endpoints
	c.Endpoints = nil
	if row := mustJSON(c); !bytes.Equal(row, hc.row) {
		hc.row = row
		hc.ver = ver
		changed = true
	}
	seen := make(map[string]bool, len(eps))
	order := make([]*hubEndpoint, 0, len(eps))
	for i := range eps {
		e := &eps[i]
		seen[e.Address] = true
		he := hc.endpoints[e.Address]
		if he == nil {
			h.nextID++
			he = &hubEndpoint{id: h.nextID, cluster: c.Name, address: e.Address}
			hc.endpoints[e.Address] = he
			hc.membersVer = ver
			changed = true
		}
		order = append(order, he)
		if h.applyEndpoint(now, he, e, ver) {
			changed = true
		}
	}
	for addr := range hc.endpoints {
		if !seen[addr] {
			delete(hc.endpoints, addr)
			delete(h.notes, endpointKey{c.Name, addr})
			hc.membersVer = ver
			changed = true
		}
	}
	hc.order = order
	if hc.membersVer == ver {
		hc.ver = ver
	}
	return changed
}

// pageEndpoint is an endpoint's row on the page: its /clusters object,
// plus the hint and error of the eviction-log record that evicted it.
type pageEndpoint struct {
	Endpoint
	Hint  string `json:"hint,omitempty"`
	Error string `json:"error,omitempty"`
}

func (h *pageHub) applyEndpoint(now time.Time, he *hubEndpoint, e *Endpoint, ver uint64) bool {
	pe := pageEndpoint{Endpoint: *e}
	// The note is the record of the eviction in force: one written
	// before the endpoint's latest change belongs to an earlier one.
	if n, ok := h.notes[endpointKey{he.cluster, he.address}]; ok && e.Health != "healthy" && !n.at.Before(e.Since) {
		pe.Hint, pe.Error = n.hint, n.err
	}
	if pe.LoadReport != nil {
		// The age grows by itself: the page has the report's time, and
		// a row changes only when a report comes.
		lr := *pe.LoadReport
		lr.AgeSeconds = 0
		pe.LoadReport = &lr
	}
	row := mustJSON(&pe)
	stateOnly := pe
	stateOnly.LoadReport = nil // figures, like the in-flight count
	stateOnly.LastProbe, stateOnly.LastLatencyMS, stateOnly.Inflight = nil, nil, 0
	// The effective weight moves while slow start ramps: a figure, like
	// the in-flight count, not a change of state.
	stateOnly.EffectiveWeight = float64(stateOnly.Weight)
	st := mustJSON(&stateOnly)
	changed := false
	if !bytes.Equal(st, he.state) {
		he.state = st
		he.stateVer = ver
		changed = true
	}
	if !bytes.Equal(row, he.row) {
		he.row = row
		he.ver = ver
		changed = true
	}
	if he.track(now, e.Health, e.Since) {
		he.ver, he.stateVer = ver, ver
		changed = true
	}
	return changed
}

// track adds what an observation of the endpoint's health says to its
// timeline and reports whether the timeline changed.
func (he *hubEndpoint) track(now time.Time, health string, since time.Time) bool {
	code, ok := spanCodes[health]
	if !ok {
		code = spanFlapping
	}
	defer func() { he.health, he.since, he.seenAt = health, since, now }()
	start := since
	if n := len(he.spans); n > 0 {
		last := he.spans[n-1]
		if health == he.health && since.Equal(he.since) {
			return false
		}
		if start.Before(last.start) {
			start = last.start
		}
		if health == he.health {
			// It changed and changed back between two reads: all that is
			// known is that it flapped after the previous read.
			flapAt := he.seenAt
			if flapAt.Before(last.start) || flapAt.After(start) {
				flapAt = start
			}
			he.spans = append(he.spans, span{flapAt, spanFlapping})
		}
	} else if min := now.Add(-pageWindow); start.Before(min) || start.IsZero() {
		start = min
	}
	he.spans = append(he.spans, span{start, code})
	he.trim(now)
	return true
}

// trim drops the spans that ended before the window and bounds the rest.
func (he *hubEndpoint) trim(now time.Time) {
	from := now.Add(-pageWindow)
	i := 0
	for i+1 < len(he.spans) && !he.spans[i+1].start.After(from) {
		i++
	}
	he.spans = he.spans[i:]
	if len(he.spans) > pageMaxSpans {
		// Keep the newest half exact; the older half becomes one
		// flapping span.
		keep := pageMaxSpans / 2
		old := he.spans[0].start
		he.spans = append([]span{{old, spanFlapping}}, he.spans[len(he.spans)-keep:]...)
	}
}

// wireSpans is the timeline as sent: [[start ms, code], ...], the first
// clipped to the window. A run of two or more spans each shorter than
// pageFlapQuantum (too short to draw one by one) is sent as one flapping
// span; the current span keeps its health however short.
func (he *hubEndpoint) wireSpans(now time.Time) [][2]any {
	from := now.Add(-pageWindow)
	n := len(he.spans)
	short := make([]bool, n)
	for i := 0; i+1 < n; i++ {
		short[i] = he.spans[i+1].start.Sub(he.spans[i].start) < pageFlapQuantum
	}
	out := make([][2]any, 0, n)
	last := byte(0)
	for i, s := range he.spans {
		code := s.code
		if short[i] && ((i > 0 && short[i-1]) || short[i+1]) {
			code = spanFlapping
		}
		if code == last {
			continue
		}
		last = code
		start := s.start
		if start.Before(from) {
			start = from
		}
		out = append(out, [2]any{start.UnixMilli(), string(code)})
	}
	return out
}

// sample adds a traffic point from the counters t and reports whether one
// was added.
func (c *hubCluster) sample(now time.Time, t metrics.ClusterTraffic) bool {
	prev, at := c.lastCount, c.lastAt
	c.lastCount, c.lastAt = &t, now
	if prev == nil {
		return false
	}
	secs := now.Sub(at).Seconds()
	if secs <= 0 || t.RPCs < prev.RPCs {
		return false
	}
	c.traffic = append(c.traffic, trafficPoint{
		At:     now.UnixMilli(),
		RPS:    float64(t.RPCs-prev.RPCs) / secs,
		Failed: float64(t.Failed-prev.Failed) / secs,
	})
	if over := len(c.traffic) - pageTrafficPoints; over > 0 {
		c.traffic = append(c.traffic[:0], c.traffic[over:]...)
	}
	return true
}

// eventNote reads the hint and error an endpoint's record carries, by the
// record's keys (a record of another kind carries neither, which clears
// them).
func eventNote(ev *state.Event) (endpointKey, hubNote, bool) {
	var k endpointKey
	n := hubNote{at: ev.Time}
	for _, a := range ev.Attrs {
		switch a.Key {
		case "cluster":
			k.cluster = a.Value.String()
		case "endpoint":
			k.address = a.Value.String()
		case "hint":
			n.hint = a.Value.String()
		case "error":
			n.err = a.Value.String()
		}
	}
	return k, n, k.cluster != "" && k.address != ""
}

// renderEvent renders ev exactly as the JSON log and /events do.
func renderEvent(ev *state.Event) (json.RawMessage, error) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	rec := slog.NewRecord(ev.Time, ev.Level, ev.Msg, 0)
	rec.AddAttrs(ev.Attrs...)
	if err := h.Handle(context.Background(), rec); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain data is marshalled here.
		panic(err)
	}
	return b
}

// clientJoined returns a channel closed at the next join; see join.
func (h *pageHub) clientJoined() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.joined == nil {
		h.joined = make(chan struct{})
	}
	return h.joined
}
