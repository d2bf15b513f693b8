package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The status page's live stream, GET /ui/stream: server-sent events, one
// JSON message per event, at most one every pageTick. The first message
// is a full snapshot (every cluster and endpoint row, timelines, traffic,
// the eviction-log tail); later ones carry only what changed. Each event's
// id is "EPOCH.VERSION", the hub version the page is fully in sync with:
// a page that reconnects (EventSource sends Last-Event-ID by itself) gets
// what changed after it, and one that comes back to another vigil process
// gets a full snapshot.
//
// However fast endpoints change, a message carries at most pageBudget
// bytes of rows: what does not fit waits in the stream's queue, each row
// once, with its latest value when its turn comes. Changes of health come
// before changes of figures (latency, in flight), and the eviction-log tail
// gets at most pageLogPerMsg records a message (the rest are counted as
// skipped; the full log is /events).

const (
	pageBudget    = 64 << 10
	pageLogPerMsg = 25
	// pageLogFull is the tail a snapshot carries.
	pageLogFull = 200
	// pageTrafficDelta is how many recent traffic points a cluster's
	// update carries (the page merges them by time).
	pageTrafficDelta = 3
)

// pageMsg is one message of the stream.
type pageMsg struct {
	Epoch string `json:"epoch"`
	V     uint64 `json:"v"`
	// Now is the server's clock (Unix ms): the page draws timelines
	// against it, not against the browser's clock.
	Now  int64 `json:"now"`
	Full bool  `json:"full,omitempty"`
	// Names lists every cluster, in order, when the list changed.
	Names    []string          `json:"names,omitempty"`
	Clusters []json.RawMessage `json:"clusters,omitempty"`
	// Endpoints: {"id","c" (cluster),"row" (the /clusters object plus hint
	// and error),"tl" (timeline)}.
	Endpoints []json.RawMessage `json:"endpoints,omitempty"`
	Log       []json.RawMessage `json:"log,omitempty"`
	// LogSkipped counts records left out of Log (more than a message
	// carries).
	LogSkipped int `json:"log_skipped,omitempty"`
	// Pending counts rows waiting for a later message.
	Pending int `json:"pending,omitempty"`
}

type pageCluster struct {
	Name    string          `json:"name"`
	Row     json.RawMessage `json:"row"`
	Traffic []trafficPoint  `json:"traffic"`
	// IDs are the cluster's endpoints in order, when they changed.
	IDs []uint64 `json:"ids,omitempty"`
}

type pageEndpointMsg struct {
	ID      uint64          `json:"id"`
	Cluster string          `json:"c"`
	Row     json.RawMessage `json:"row"`
	TL      [][2]any        `json:"tl"`
}

// pageSub is one stream's position in the hub.
type pageSub struct {
	hub  *pageHub
	full bool
	// scanned: every row changed up to this version is sent or queued;
	// synced: sent. logSent: records up to this version are sent.
	scanned, synced, logSent, namesSent uint64
	members                             map[string]uint64 // cluster -> membersVer sent
	resumed                             uint64            // memberships the page had when it resumed
	hi, lo                              []pageItem        // health changes first, then figures
	queued                              map[pageKey]bool  // true: in hi
}

type pageItem struct {
	cluster string
	ep      *hubEndpoint // nil: the cluster's own row
}

type pageKey struct {
	cluster string
	id      uint64 // 0: the cluster's row
}

func (it pageItem) key() pageKey {
	if it.ep == nil {
		return pageKey{cluster: it.cluster}
	}
	return pageKey{it.cluster, it.ep.id}
}

// subscribe opens a stream position after lastID ("" or another epoch's:
// a full snapshot) and counts the stream as a client until unsubscribe.
func (h *pageHub) subscribe(lastID string) *pageSub {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients++
	if h.joined != nil {
		close(h.joined)
		h.joined = nil
	}
	sub := &pageSub{hub: h, full: true, members: map[string]uint64{}, queued: map[pageKey]bool{}}
	if epoch, v, ok := strings.Cut(lastID, "."); ok && epoch == h.epoch {
		if ver, err := strconv.ParseUint(v, 10, 64); err == nil && ver <= h.version {
			sub.full = false
			sub.scanned, sub.synced, sub.logSent, sub.namesSent, sub.resumed = ver, ver, ver, ver, ver
		}
	}
	return sub
}

func (h *pageHub) unsubscribe() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.clients--
}

// next builds the stream's next message, and returns the channel closed
// at the hub's next change and whether rows are still queued.
func (sub *pageSub) next(now time.Time) ([]byte, <-chan struct{}, bool) {
	h := sub.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	full := sub.full
	sub.full = false
	msg := pageMsg{Epoch: h.epoch, V: h.version, Now: now.UnixMilli(), Full: full}
	if full || h.namesVer > sub.namesSent {
		msg.Names = h.names
		if msg.Names == nil {
			msg.Names = []string{}
		}
		sub.namesSent = h.version
	}
	sub.scan()

	budget := pageBudget
	if full {
		budget = int(^uint(0) >> 1)
	}
	size := 0
	for size < budget && (len(sub.hi) > 0 || len(sub.lo) > 0) {
		var it pageItem
		if len(sub.hi) > 0 {
			it, sub.hi = sub.hi[0], sub.hi[1:]
		} else {
			it, sub.lo = sub.lo[0], sub.lo[1:]
			if sub.queued[it.key()] {
				continue // moved to hi meanwhile, and sent from there
			}
		}
		delete(sub.queued, it.key())
		b := sub.encode(it, now, full)
		if b == nil {
			continue // gone since it was queued
		}
		size += len(b)
		if it.ep == nil {
			msg.Clusters = append(msg.Clusters, b)
		} else {
			msg.Endpoints = append(msg.Endpoints, b)
		}
	}
	more := len(sub.hi) > 0 || len(sub.lo) > 0
	if !more {
		sub.synced = sub.scanned
	}
	msg.Pending = len(sub.queued)

	limit := pageLogPerMsg
	if full {
		limit = pageLogFull
	}
	first := len(h.log)
	for first > 0 && h.log[first-1].ver > sub.logSent {
		first--
	}
	if n := len(h.log) - first; n > limit {
		msg.LogSkipped = n - limit
		first = len(h.log) - limit
	}
	for _, r := range h.log[first:] {
		msg.Log = append(msg.Log, r.data)
	}
	sub.logSent = h.version
	return mustJSON(&msg), h.changed, more
}

// scan queues the rows that changed since the last scan; h.mu is held.
func (sub *pageSub) scan() {
	h := sub.hub
	for _, name := range h.names {
		hc := h.clusters[name]
		if hc == nil {
			continue
		}
		if hc.ver > sub.scanned || hc.membersVer > sub.sentMembers(name) {
			sub.enqueue(pageItem{cluster: name}, true)
		}
		for _, ep := range hc.order {
			switch {
			case ep.stateVer > sub.scanned:
				sub.enqueue(pageItem{name, ep}, true)
			case ep.ver > sub.scanned:
				sub.enqueue(pageItem{name, ep}, false)
			}
		}
	}
	sub.scanned = h.version
}

func (sub *pageSub) sentMembers(cluster string) uint64 {
	if v, ok := sub.members[cluster]; ok {
		return v
	}
	return sub.resumed
}

func (sub *pageSub) enqueue(it pageItem, hi bool) {
	k := it.key()
	inHi, queued := sub.queued[k]
	switch {
	case queued && (inHi || !hi):
		return
	case hi:
		sub.hi = append(sub.hi, it)
	default:
		sub.lo = append(sub.lo, it)
	}
	sub.queued[k] = hi
}

// encode renders a queued row as it is now, or nil if it is gone.
func (sub *pageSub) encode(it pageItem, now time.Time, full bool) []byte {
	hc := sub.hub.clusters[it.cluster]
	if hc == nil {
		return nil
	}
	if it.ep != nil {
		if hc.endpoints[it.ep.address] != it.ep {
			return nil
		}
		return mustJSON(&pageEndpointMsg{ID: it.ep.id, Cluster: it.cluster, Row: it.ep.row, TL: it.ep.wireSpans(now)})
	}
	pc := pageCluster{Name: hc.name, Row: hc.row, Traffic: hc.traffic}
	if !full && len(pc.Traffic) > pageTrafficDelta {
		pc.Traffic = pc.Traffic[len(pc.Traffic)-pageTrafficDelta:]
	}
	if pc.Traffic == nil {
		pc.Traffic = []trafficPoint{}
	}
	if full || hc.membersVer > sub.sentMembers(it.cluster) {
		pc.IDs = make([]uint64, len(hc.order))
		for i, ep := range hc.order {
			pc.IDs[i] = ep.id
		}
		sub.members[it.cluster] = sub.hub.version
	}
	return mustJSON(&pc)
}

// id is the SSE id of the stream's position.
func (sub *pageSub) id() string { return sub.hub.epoch + "." + strconv.FormatUint(sub.synced, 10) }

// pageStream serves GET /ui/stream.
func (s *Server) pageStream(w http.ResponseWriter, r *http.Request) {
	select {
	case s.streamSlots <- struct{}{}:
		defer func() { <-s.streamSlots }()
	default:
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many event streams", http.StatusServiceUnavailable)
		return
	}
	if !s.trackStream() {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.streams.Done()
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		http.Error(w, "cannot stream", http.StatusInternalServerError)
		return
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("last_event_id")
	}
	hub := s.pageHub()
	select {
	case <-hub.ready:
	case <-r.Context().Done():
		return
	}
	sub := hub.subscribe(strings.TrimSpace(lastID))
	defer hub.unsubscribe()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	setPageSecurityHeaders(h)
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	write := func() error {
		if err := rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		if err != nil {
			return err
		}
		return rc.Flush()
	}
	fmt.Fprintf(&buf, "retry: %d\n\n", retryMillis)
	ctx := r.Context()
	for {
		msg, changed, more := sub.next(hub.opts.now())
		fmt.Fprintf(&buf, "id: %s\ndata: ", sub.id())
		buf.Write(msg)
		buf.WriteString("\n\n")
		if err := write(); err != nil {
			s.log.Debug("admin: status page stream ended", "remote", r.RemoteAddr, "err", err)
			return
		}
		sent := time.Now()
		if !more {
			heartbeat := time.NewTimer(s.opts.Heartbeat)
		idle:
			for {
				select {
				case <-ctx.Done():
					heartbeat.Stop()
					return
				case <-changed:
					heartbeat.Stop()
					break idle
				case <-heartbeat.C:
					buf.WriteString(": heartbeat\n\n")
					if err := write(); err != nil {
						return
					}
					heartbeat.Reset(s.opts.Heartbeat)
				}
			}
		}
		// Coalesce: at most one message per tick.
		if wait := pageTick - time.Since(sent); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}
