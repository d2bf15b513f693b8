package admin

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/vigil-proxy/vigil/internal/state"
)

// retryMillis is the reconnection delay the event stream suggests to
// EventSource clients.
const retryMillis = 2000

// events streams the eviction log as server-sent events: each record is
// one event whose id is its sequence number and whose data is the record
// as one JSON object, exactly as the JSON log prints it.
//
// On connect the stream replays recent records: those after Last-Event-ID
// (header, or ?last_event_id= for clients that cannot set it) when the
// client resumes, else the last ?replay=N (default Options.Replay). Then
// it follows the store's events table until the client leaves or the
// server shuts down, with a comment line every Heartbeat while idle.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	after, replay, err := s.streamStart(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
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

	st := &stream{
		w:       w,
		rc:      http.NewResponseController(w),
		timeout: s.opts.WriteTimeout,
	}
	st.jsonLog = slog.NewJSONHandler(&st.record, &slog.HandlerOptions{Level: slog.LevelDebug})
	// The server's read timeout bounds reading the request; left in
	// place, it would end the stream (net/http cancels the request when
	// its background read of the idle connection times out).
	if err := st.rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		http.Error(w, "cannot stream", http.StatusInternalServerError)
		return
	}
	// Where the stream starts is fixed before the answer goes out: an
	// event logged once the client has the response headers is live.
	ws := memdb.NewWatchSet()
	history, err := s.opts.Store.Snapshot().EventsAfter(ws, 0)
	if err != nil {
		s.log.Error("admin: read events", "err", err)
		http.Error(w, fmt.Sprintf("read events: %v", err), http.StatusInternalServerError)
		return
	}
	replayed, after := s.startingEvents(history, after, replay)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	st.printf("retry: %d\n: vigil eviction log\n\n", retryMillis)
	for _, ev := range replayed {
		if err := st.event(ev); err != nil {
			s.log.Error("admin: event stream", "err", err)
			return
		}
	}
	if err := st.flush(); err != nil {
		return
	}
	s.following.Add(1)
	defer s.following.Add(-1)
	if err := s.follow(r.Context(), st, ws, after); err != nil && r.Context().Err() == nil {
		s.log.Debug("admin: event stream ended", "remote", r.RemoteAddr, "err", err)
	}
}

// trackStream counts a stream that Shutdown must wait for, unless
// Shutdown has begun.
func (s *Server) trackStream() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.streams.Add(1)
	return true
}

// streamStart reads where a stream starts: after is the last sequence
// number the client has (resume), or replay is how many recent events to
// send (replay >= 0 means no resume).
func (s *Server) streamStart(r *http.Request) (after uint64, replay int, err error) {
	q := r.URL.Query()
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = q.Get("last_event_id")
	}
	if id = strings.TrimSpace(id); id != "" {
		after, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("bad Last-Event-ID %q: want an event number", id)
		}
		return after, -1, nil
	}
	replay = max(s.opts.Replay, 0)
	if v := q.Get("replay"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, 0, fmt.Errorf("bad replay %q: want a number of events, 0 or more", v)
		}
		replay = n
	}
	return 0, replay, nil
}

// follow waits for ws to fire, writes the events after `after`, and so on
// until ctx ends or a write fails; an idle stream gets a heartbeat comment.
func (s *Server) follow(ctx context.Context, st *stream, ws memdb.WatchSet, after uint64) error {
	for {
		// WatchCtx blocks until the table changes, the heartbeat is due,
		// or the stream ends. The watch set is never nil: EventsAfter
		// always adds the table's channel.
		wait, cancel := context.WithTimeout(ctx, s.opts.Heartbeat)
		err := ws.WatchCtx(wait)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil { // the heartbeat is due; nothing changed
			st.printf(": heartbeat\n\n")
			if err := st.flush(); err != nil {
				return err
			}
			continue
		}
		ws = memdb.NewWatchSet()
		evs, err := s.opts.Store.Snapshot().EventsAfter(ws, after)
		if err != nil {
			return fmt.Errorf("read events: %w", err)
		}
		for _, ev := range evs {
			if err := st.event(ev); err != nil {
				return err
			}
			after = ev.Seq
		}
		if len(evs) > 0 {
			if err := st.flush(); err != nil {
				return err
			}
		}
	}
}

// startingEvents picks, from the whole history held, what a new stream
// sends first, and returns the number of the newest event held, from which
// the stream follows. A resuming client (replay < 0) gets every event after
// its last one; others get the last replay events.
func (s *Server) startingEvents(history []*state.Event, after uint64, replay int) ([]*state.Event, uint64) {
	var newest uint64
	if len(history) > 0 {
		newest = history[len(history)-1].Seq
	}
	if replay < 0 {
		if after <= newest {
			i := 0
			for i < len(history) && history[i].Seq <= after {
				i++
			}
			return history[i:], newest
		}
		// The client has a number this process has not reached: it was
		// following an earlier vigil process (numbers restart with the
		// process). It gets the default replay rather than waiting
		// silently for the numbers to catch up.
		replay = max(s.opts.Replay, 0)
	}
	if len(history) > replay {
		history = history[len(history)-replay:]
	}
	return history, newest
}

// stream writes one client's events.
type stream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	// record and jsonLog render an event exactly as the JSON log would.
	record  bytes.Buffer
	jsonLog slog.Handler
	buf     bytes.Buffer
}

func (st *stream) printf(format string, args ...any) { fmt.Fprintf(&st.buf, format, args...) }

// event renders ev as an SSE event into the buffer.
func (st *stream) event(ev *state.Event) error {
	st.record.Reset()
	rec := slog.NewRecord(ev.Time, ev.Level, ev.Msg, 0)
	rec.AddAttrs(ev.Attrs...)
	if err := st.jsonLog.Handle(context.Background(), rec); err != nil {
		return fmt.Errorf("render event %d: %w", ev.Seq, err)
	}
	data := bytes.TrimRight(st.record.Bytes(), "\n")
	st.printf("id: %d\n", ev.Seq)
	// The JSON handler escapes newlines inside strings, so data is one
	// line; split anyway so that a stray newline cannot end the event.
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, len(data)+1), len(data)+1)
	for sc.Scan() {
		st.buf.WriteString("data: ")
		st.buf.Write(sc.Bytes())
		st.buf.WriteByte('\n')
	}
	st.buf.WriteByte('\n')
	return nil
}

// flush writes what is buffered within the write timeout and pushes it to
// the client.
func (st *stream) flush() error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("set write deadline: %w", err)
	}
	_, err := st.w.Write(st.buf.Bytes())
	st.buf.Reset()
	if err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	if err := st.rc.Flush(); err != nil {
		return fmt.Errorf("flush events: %w", err)
	}
	return nil
}
