package grpcproxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/internal/h2wire"
)

// downConn is one client connection of the frame engine: its reader
// goroutine (serve) reads the client's frames and forwards them; backends'
// frames reach the client through w.
type downConn struct {
	p  *Proxy
	nc net.Conn
	br *bufio.Reader
	fr *http2.Framer
	hr *h2wire.HeaderReader // reads fr's frames, header blocks decoded
	w  *h2writer

	// w.mu guards these.
	streams  map[uint32]*fstream
	lastID   uint32 // highest client stream id seen
	draining bool   // GOAWAY sent: no new streams, close when idle
	closed   bool

	idleTimer *time.Timer // fires p.idleTimeout after the last stream ended

	resetTokens float64 // rapid-reset bucket
	resetAt     time.Time

	// replayBytes is what its streams keep for a transparent retry.
	replayBytes atomic.Int64
}

// serveConn runs one client connection until it ends. The caller counts it
// in p.conns.
func (p *Proxy) serveConn(nc net.Conn) {
	dc := &downConn{p: p, nc: nc, w: newAsyncWriter(nc, p.acks), streams: map[uint32]*fstream{}}
	dc.br = bufio.NewReaderSize(dc.w.io, bufSize)
	if !p.trackConn(dc) {
		_ = nc.Close()
		return
	}
	defer p.untrackConn(dc)
	writerDone := make(chan struct{})
	var writer sync.WaitGroup
	writer.Go(func() { dc.w.runWriter(writerDone) })
	defer writer.Wait()
	defer close(writerDone)
	defer dc.close()

	// The client preface must come soon: a client that connects and sends
	// nothing is dropped.
	_ = nc.SetReadDeadline(time.Now().Add(clientPrefaceTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(dc.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	dc.fr = http2.NewFramer(nil, dc.br)
	// DATA frames are forwarded (copied) before the next read.
	dc.fr.SetReuseFrames()
	dc.fr.SetMaxReadFrameSize(defaultMaxFrame)
	// Header blocks too are decoded into storage reused frame after frame:
	// a header list that must outlive the next frame is copied.
	dc.hr = h2wire.NewHeaderReader(dc.fr, 4096, maxHeaderListSize)

	dc.w.mu.Lock()
	dc.w.note(dc.w.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: p.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	))
	dc.w.note(dc.w.fr.WriteWindowUpdate(0, connWindow-65535))
	dc.w.flushLocked()
	dc.startIdleLocked()
	if p.stopping.Err() != nil {
		dc.goAwayLocked()
	}
	dc.w.mu.Unlock()

	var fl flusher
	defer fl.flushAll()
	for {
		// The frame's type, for judging a stream error the framer finds.
		var ftype http2.FrameType
		if hdr, err := dc.br.Peek(frameHeaderLen); err == nil {
			ftype = http2.FrameType(hdr[3])
		}
		f, err := dc.hr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				if err := dc.streamError(se, ftype, &fl); err != nil {
					fl.flushAll()
					dc.goAwayError(err)
					return
				}
				if dc.br.Buffered() == 0 {
					fl.flushAll()
				}
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				dc.goAwayError(connError{code: http2.ErrCode(ce)})
			}
			return
		}
		if err := dc.handle(f, &fl); err != nil {
			fl.flushAll()
			dc.goAwayError(err)
			return
		}
		if dc.br.Buffered() == 0 {
			fl.flushAll()
		}
	}
}

// goAwayError ends the connection on a connection error: GOAWAY with its
// code (and reason as debug data), written before the connection closes.
func (dc *downConn) goAwayError(err error) {
	ce := asConnError(err)
	dc.w.mu.Lock()
	defer dc.w.mu.Unlock()
	var debug []byte
	if ce.reason != "" {
		debug = []byte(ce.reason)
	}
	dc.w.note(dc.w.fr.WriteGoAway(dc.lastID, ce.code, debug))
	dc.draining = true
	dc.closeLocked()
}

// streamError handles a stream error the framer found in the client's
// frame of type ftype (an invalid header list, a zero WINDOW_UPDATE
// increment, ...): the stream is reset, or the connection ends where a
// reset cannot repair it. A non-nil result is that connection error.
func (dc *downConn) streamError(se http2.StreamError, ftype http2.FrameType, fl *flusher) error {
	id := se.StreamID
	dc.w.mu.Lock()
	s, lastID := dc.streams[id], dc.lastID
	dc.w.mu.Unlock()
	switch {
	case ftype == http2.FrameHeaders && dc.hr.ErrorDetail() == nil:
		// Refused before its header block was decoded (bad padding):
		// this connection's HPACK state is lost.
		return connError{http2.ErrCodeProtocol, "invalid HEADERS frame"}
	case s != nil:
	case id <= lastID:
		// A closed stream: nothing to reset.
		return nil
	case ftype != http2.FrameHeaders:
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("frame of type %v on idle stream %d", ftype, id)}
	case id%2 == 0:
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("a client opened stream %d (even)", id)}
	default:
		// A malformed request opens the stream, and our reset closes it
		// (RFC 9113 8.1.1).
		dc.w.mu.Lock()
		dc.lastID = id
		dc.w.mu.Unlock()
	}
	return dc.resetStream(id, se.Code, fl)
}

// idleLocked tells whether stream id is idle: never opened by the client.
func (dc *downConn) idleLocked(id uint32) bool { return id > dc.lastID }

// handle processes one frame from the client. An error is a connection
// error: the caller sends GOAWAY and ends the connection.
func (dc *downConn) handle(f http2.Frame, fl *flusher) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return dc.onHeaders(f, fl)
	case *http2.DataFrame:
		return dc.onData(f, fl)
	case *http2.RSTStreamFrame:
		dc.w.mu.Lock()
		idle := dc.idleLocked(f.StreamID)
		dc.w.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, fmt.Sprintf("RST_STREAM on idle stream %d", f.StreamID)}
		}
		return dc.resetStream(f.StreamID, 0, fl)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			// RFC 9113 5.3.1: a stream error; an idle stream cannot be
			// reset, so there it ends the connection.
			dc.w.mu.Lock()
			idle := dc.idleLocked(f.StreamID)
			dc.w.mu.Unlock()
			if idle {
				return connError{http2.ErrCodeProtocol, fmt.Sprintf("PRIORITY: stream %d depends on itself", f.StreamID)}
			}
			return dc.resetStream(f.StreamID, http2.ErrCodeProtocol, fl)
		}
	case *http2.WindowUpdateFrame:
		var credits []credit
		ok := true
		var s *fstream
		dc.w.mu.Lock()
		if f.StreamID == 0 {
			credits, ok = dc.w.windowUpdateLocked(nil, int64(f.Increment), credits)
		} else if s = dc.streams[f.StreamID]; s != nil {
			credits, ok = dc.w.windowUpdateLocked(&s.resp, int64(f.Increment), credits)
		} else if dc.idleLocked(f.StreamID) {
			dc.w.mu.Unlock()
			return connError{http2.ErrCodeProtocol, fmt.Sprintf("WINDOW_UPDATE on idle stream %d", f.StreamID)}
		}
		fl.touchLocked(dc.w)
		dc.w.mu.Unlock()
		sendCredits(fl, credits)
		if !ok {
			if s == nil {
				return connError{http2.ErrCodeFlowControl, "WINDOW_UPDATE takes the connection window over 2^31-1"}
			}
			return dc.resetStream(f.StreamID, http2.ErrCodeFlowControl, fl)
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		dc.w.mu.Lock()
		credits, err := dc.w.settingsLocked(f, false, nil)
		fl.touchLocked(dc.w)
		dc.w.mu.Unlock()
		if err != nil {
			return err
		}
		sendCredits(fl, credits)
	case *http2.PingFrame:
		if !f.IsAck() {
			dc.w.mu.Lock()
			if dc.w.pingLocked(f.Data) {
				fl.touchLocked(dc.w)
			}
			dc.w.mu.Unlock()
		}
	case *http2.PushPromiseFrame:
		// Only servers push (RFC 9113 8.4); its header block was not
		// decoded either, so this connection's HPACK state is lost.
		return connError{http2.ErrCodeProtocol, "a client sent PUSH_PROMISE"}
	case *http2.GoAwayFrame:
		// The client will open no more streams; the connection ends with
		// them.
		dc.w.mu.Lock()
		dc.draining = true
		if len(dc.streams) == 0 {
			dc.closeLocked()
		}
		dc.w.mu.Unlock()
	}
	return nil
}

// errHeadersTooLarge is the status of a request whose header list is
// over maxHeaderListSize.
var errHeadersTooLarge = fmt.Sprintf("vigil: request header list over the limit of %d bytes", maxHeaderListSize)

// onHeaders starts a stream (or ends one, for trailers from the client).
func (dc *downConn) onHeaders(f *http2.MetaHeadersFrame, fl *flusher) error {
	p := dc.p
	id := f.StreamID
	dc.w.mu.Lock()
	if s := dc.streams[id]; s != nil {
		dc.w.mu.Unlock()
		return dc.onTrailers(s, f, fl)
	}
	if id%2 == 0 {
		dc.w.mu.Unlock()
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("a client opened stream %d (even)", id)}
	}
	if id <= dc.lastID {
		ignore := dc.w.resetByUsLocked(id)
		dc.w.mu.Unlock()
		if ignore {
			// Trailers sent before the client read our reset.
			return nil
		}
		// A closed stream, or one lower than a stream opened since
		// (RFC 9113 5.1.1).
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("HEADERS on closed stream %d", id)}
	}
	dc.lastID = id
	dc.w.mu.Unlock()

	req, err := h2wire.CheckRequest(f.Fields)
	if err == nil && f.HasPriority() && f.Priority.StreamDep == id {
		err = errors.New("the stream depends on itself")
	}
	if err != nil {
		// A malformed request is refused, never forwarded (RFC 9113
		// 8.1.1): a stream error.
		return dc.resetStream(id, http2.ErrCodeProtocol, fl)
	}

	dc.w.mu.Lock()
	if dc.draining || dc.closed || dc.w.active >= int(p.maxStreams) {
		dc.w.note(dc.w.fr.WriteRSTStream(id, http2.ErrCodeRefusedStream))
		dc.w.sentResetLocked(id)
		fl.touchLocked(dc.w)
		dc.w.mu.Unlock()
		return nil
	}
	s := &fstream{p: p, dc: dc, downID: id, start: time.Now(), reqEnded: f.StreamEnded(), reqLen: req.ContentLength}
	if s.al = p.accessLog.Load(); s.al != nil {
		s.method, s.authority, s.agent = logFields(f.Fields)
	}
	s.resp = half{dst: dc.w, id: id, win: dc.w.initWin, toPeer: true, counted: true, peerEnded: f.StreamEnded()}
	dc.w.active++
	dc.w.halves.add(&s.resp)
	dc.streams[id] = s
	dc.stopIdleLocked()
	dc.w.mu.Unlock()

	if f.Truncated {
		// The framer dropped the fields past the limit and decoded the
		// rest: forwarding what is left would lose headers silently (an
		// authorization at the end, say). RESOURCE_EXHAUSTED tells a gRPC
		// client what went wrong; an HTTP 431 would reach it as UNKNOWN
		// and a reset as INTERNAL, neither naming the cause.
		s.fail(codes.ResourceExhausted, errHeadersTooLarge, fl)
		return nil
	}
	if f.StreamEnded() && req.ContentLength > 0 {
		return dc.resetStream(id, http2.ErrCodeProtocol, fl)
	}
	if !req.IsGRPC() {
		// Not gRPC: answered, once the request is in, as an HTTP/2 server
		// answers a method (405) or a content-type (415) it does not
		// serve, so that no backend sees it.
		s.plain, s.head = true, req.Method == "HEAD"
		if req.Method == "POST" {
			s.plainStatus = "415"
		}
		if f.StreamEnded() {
			s.answerPlain(fl)
		}
		return nil
	}
	if p.isLocal(req.Path) {
		s.startLocal(req.Path, f, f.StreamEnded())
		return nil
	}
	s.open(req.Path, req.Authority, requestHeaders(f.Fields), f.StreamEnded(), fl)
	return nil
}

// onTrailers ends a stream's request with trailers (gRPC clients do not
// send them, but HTTP/2 allows it).
func (dc *downConn) onTrailers(s *fstream, f *http2.MetaHeadersFrame, fl *flusher) error {
	id := f.StreamID
	dc.w.mu.Lock()
	closed := s.resp.closed
	if !closed && f.StreamEnded() {
		s.resp.peerEnded = true
	}
	dc.w.mu.Unlock()
	switch {
	case closed:
		// Sent before the client read our reset.
		return nil
	case s.reqEnded:
		// HEADERS on a half-closed (remote) stream (RFC 9113 5.1).
		return dc.resetStream(id, http2.ErrCodeStreamClosed, fl)
	case !f.StreamEnded() || h2wire.CheckTrailers(f.Fields) != nil:
		// Trailers end the stream and carry no pseudo-header field (RFC
		// 9113 8.1).
		return dc.resetStream(id, http2.ErrCodeProtocol, fl)
	case s.reqLen >= 0 && s.reqBody != s.reqLen:
		return dc.resetStream(id, http2.ErrCodeProtocol, fl)
	}
	s.reqEnded = true
	if f.Truncated {
		s.cut(codes.ResourceExhausted, errHeadersTooLarge, fl)
		return nil
	}
	if s.plain {
		s.answerPlain(fl)
		return nil
	}
	s.clientData(nil, true, fl)
	return nil
}

// requestHeaders copies the client's header list for the backend (the
// frame's list is reused for the next frame; the stream keeps its copy for
// a retry), without Host (:authority says it; RFC 9113 8.3.1). The
// connection-specific fields HTTP/2 forbids were refused already
// (h2wire.CheckRequest).
func requestHeaders(fields []hpack.HeaderField) []hpack.HeaderField {
	out := make([]hpack.HeaderField, 0, len(fields))
	for _, f := range fields {
		if f.Name == "host" {
			continue
		}
		out = append(out, f)
	}
	return out
}

// logFields are the request's fields the access log shows: :path,
// :authority (Host when it has none) and user-agent.
func logFields(fields []hpack.HeaderField) (path, authority, agent string) {
	host := ""
	for _, f := range fields {
		switch f.Name {
		case ":path":
			path = f.Value
		case ":authority":
			authority = f.Value
		case "host":
			host = f.Value
		case "user-agent":
			agent = f.Value
		}
	}
	if authority == "" {
		authority = host
	}
	return path, authority, agent
}

func (dc *downConn) onData(f *http2.DataFrame, fl *flusher) error {
	n := int64(f.Length)
	id := f.StreamID
	dc.w.mu.Lock()
	// Connection window is returned on receipt: stream windows bound what
	// the proxy buffers.
	ok := dc.w.receivedLocked(n)
	fl.touchLocked(dc.w)
	s := dc.streams[id]
	var idle, ignore bool
	if s == nil {
		idle, ignore = dc.idleLocked(id), dc.w.resetByUsLocked(id)
	} else if ignore = s.resp.closed; !ignore && f.StreamEnded() {
		s.resp.peerEnded = true
	}
	dc.w.mu.Unlock()
	switch {
	case !ok:
		return connError{http2.ErrCodeFlowControl, "DATA over the connection's flow-control window"}
	case idle:
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("DATA on idle stream %d", id)}
	case ignore:
		// Sent before the client read our reset (RFC 9113 5.1).
		return nil
	case s == nil || s.reqEnded:
		// DATA on a closed or half-closed (remote) stream (RFC 9113 5.1:
		// STREAM_CLOSED).
		return dc.resetStream(id, http2.ErrCodeStreamClosed, fl)
	}
	s.reqEnded = f.StreamEnded()
	if s.al != nil {
		s.reqBytes.Add(int64(len(f.Data())))
	}
	if s.reqRecvd += n; s.reqRecvd > s.reqCredited.Load()+streamWindow {
		return dc.resetStream(id, http2.ErrCodeFlowControl, fl)
	}
	if s.reqLen >= 0 {
		// The DATA must add up to the content-length (RFC 9113 8.1.1).
		s.reqBody += int64(len(f.Data()))
		if s.reqBody > s.reqLen || (s.reqEnded && s.reqBody != s.reqLen) {
			return dc.resetStream(id, http2.ErrCodeProtocol, fl)
		}
	}
	if s.plain {
		if s.reqEnded {
			s.answerPlain(fl)
		}
		return nil
	}
	s.clientData(f.Data(), f.StreamEnded(), fl)
	return nil
}

// resetStream handles an RST_STREAM from the client (code 0) or a stream
// error found in its frames (code: the reset we send). Either ends the
// backend stream at once. Resets of open streams draw from the
// connection's reset budget, whichever side sent them: a client that
// resets streams itself (Rapid Reset, CVE-2023-44487) or makes the proxy
// reset them with frames that are stream errors (MadeYouReset,
// CVE-2025-8671) would otherwise have backend work started and abandoned
// without its stream limit bounding it. Past the budget the connection
// gets GOAWAY ENHANCE_YOUR_CALM, returned as the connection error.
func (dc *downConn) resetStream(id uint32, code http2.ErrCode, fl *flusher) error {
	dc.w.mu.Lock()
	s := dc.streams[id]
	if code != 0 && (s == nil || !s.resp.closed) {
		dc.w.note(dc.w.fr.WriteRSTStream(id, code))
		dc.w.sentResetLocked(id)
		fl.touchLocked(dc.w)
	}
	calm := s != nil && !s.resp.done && !dc.resetAllowedLocked()
	if s != nil {
		s.resp.uncountLocked()
		if code != 0 {
			s.resp.done, s.resp.closed = true, true
			s.resp.buf, s.resp.trailers = nil, nil
		}
	}
	dc.w.mu.Unlock()
	if s != nil {
		s.clientReset()
	}
	if calm {
		return connError{http2.ErrCodeEnhanceYourCalm, "too many stream resets"}
	}
	return nil
}

// Client resets of open streams allowed per connection: a burst, then a
// steady rate.
const (
	resetBurst = 1000
	resetRate  = 200 // per second
)

// resetAllowedLocked takes a token from the connection's reset bucket.
func (dc *downConn) resetAllowedLocked() bool {
	now := time.Now()
	if dc.resetAt.IsZero() {
		dc.resetTokens, dc.resetAt = resetBurst, now
	}
	dc.resetTokens = min(resetBurst, dc.resetTokens+now.Sub(dc.resetAt).Seconds()*resetRate)
	dc.resetAt = now
	if dc.resetTokens < 1 {
		return false
	}
	dc.resetTokens--
	return true
}

// removeLocked forgets a finished stream.
func (dc *downConn) removeLocked(s *fstream) {
	if dc.streams[s.downID] != s {
		return
	}
	delete(dc.streams, s.downID)
	dc.w.halves.remove(&s.resp)
	if len(dc.streams) == 0 {
		if dc.draining {
			dc.closeLocked()
			return
		}
		dc.startIdleLocked()
	}
}

func (dc *downConn) startIdleLocked() {
	if dc.closed {
		return
	}
	if dc.idleTimer == nil {
		dc.idleTimer = time.AfterFunc(dc.p.idleTimeout, dc.onIdle)
		return
	}
	dc.idleTimer.Reset(dc.p.idleTimeout)
}

func (dc *downConn) stopIdleLocked() {
	if dc.idleTimer != nil {
		dc.idleTimer.Stop()
	}
}

func (dc *downConn) onIdle() {
	dc.w.mu.Lock()
	defer dc.w.mu.Unlock()
	if len(dc.streams) == 0 && !dc.closed {
		dc.goAwayLocked()
	}
}

// goAwayLocked tells the client to open no more streams; the connection
// closes once its streams ended.
func (dc *downConn) goAwayLocked() {
	if dc.draining || dc.closed {
		return
	}
	dc.draining = true
	dc.w.note(dc.w.fr.WriteGoAway(dc.lastID, http2.ErrCodeNo, nil))
	dc.w.flushLocked()
	if len(dc.streams) == 0 {
		dc.closeLocked()
	}
}

// closeLocked ends the connection gracefully: what is queued for the
// client is written first.
func (dc *downConn) closeLocked() {
	if dc.closed {
		return
	}
	dc.closed = true
	if dc.idleTimer != nil {
		dc.idleTimer.Stop()
	}
	dc.w.closing = true
	dc.w.dirty = true
	dc.w.flushLocked()
}

// killLocked ends the connection at once.
func (dc *downConn) killLocked() {
	dc.closeLocked()
	_ = dc.nc.Close()
}

// close ends the connection and every stream still on it.
func (dc *downConn) close() {
	dc.w.mu.Lock()
	dc.closeLocked()
	if dc.w.err == nil {
		dc.w.err = net.ErrClosed
	}
	streams := make([]*fstream, 0, len(dc.streams))
	for _, s := range dc.streams {
		streams = append(streams, s)
	}
	dc.w.mu.Unlock()
	for _, s := range streams {
		s.clientReset()
	}
}

// statusFields are the trailers of a status the proxy answers itself;
// trailersOnly adds what a response without headers needs.
func statusFields(code codes.Code, msg string, trailersOnly bool) []hpack.HeaderField {
	var f []hpack.HeaderField
	if trailersOnly {
		f = append(f, hpack.HeaderField{Name: ":status", Value: "200"},
			hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	}
	f = append(f, hpack.HeaderField{Name: "grpc-status", Value: h2wire.FormatGRPCStatus(code)})
	if msg != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: h2wire.EncodeGRPCMessage(msg)})
	}
	return f
}
