package grpcproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/internal/h2wire"
)

const (
	// dialTimeout bounds the TCP connect to a backend. As in tcpproxy: a
	// healthy endpoint on a LAN or loopback answers a SYN in well under a
	// millisecond and a refusing one at once; an attempt that takes a
	// second is almost always a blackholed host, and the RPCs waiting for
	// it (none of which was sent) are better served by another endpoint
	// than by SYN retransmits.
	dialTimeout = time.Second
	// connectPoll is how often a connection being set up checks whether
	// its endpoint was excluded (evicted) or closed meanwhile: then it
	// gives up at once and its queued RPCs move on.
	connectPoll = 20 * time.Millisecond
	// clientPrefaceTimeout bounds a client's HTTP/2 preface.
	clientPrefaceTimeout = 10 * time.Second
	// Backoff after a failed connection to a backend: RPCs skip the
	// endpoint at once (as grpc-go fails fast in TRANSIENT_FAILURE) until
	// the next attempt.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// upHandshakeTimeout bounds the wait for a connected backend's SETTINGS.
// An HTTP/2 server sends SETTINGS as soon as it accepts (grpc-go writes
// them before reading anything): on a LAN they arrive within a
// millisecond, from a loaded backend within tens. A backend that accepts
// and stays silent for a second is hung, and the RPCs queued on the
// connection move on well within common deadlines instead of failing
// with DEADLINE_EXCEEDED without ever being sent. A variable for tests.
var upHandshakeTimeout = time.Second

// maxConnsPerEndpoint bounds the connections the proxy opens to one
// endpoint: with a backend's usual stream limit of 100 (or none, as
// grpc-go's), thousands of concurrent RPCs.
const maxConnsPerEndpoint = 64

// upstreamIdle closes a backend connection without streams for that long
// (a removed endpoint that was never Closed keeps none open). A variable
// for tests.
var upstreamIdle = 10 * time.Minute

// upPool holds the frame engine's connections to one endpoint. Health
// probes have a connection of their own (checker/internal/probeconn).
type upPool struct {
	p  *Proxy
	ep *balancer.Endpoint

	mu        sync.Mutex
	conns     []*upConn
	failUntil time.Time
	backoff   time.Duration
	lastErr   error
	closed    bool
	reason    string // why the pool closed, for the streams it cuts
}

// upstream returns a connection to ep that takes a new stream, dialing
// one if needed; an error means ep is unreachable right now.
func (p *Proxy) upstream(ep *balancer.Endpoint) (*upConn, error) {
	select {
	case <-ep.Closed():
		return nil, errors.New("endpoint removed")
	default:
	}
	v, ok := p.pools.Load(ep)
	if !ok {
		pl := &upPool{p: p, ep: ep}
		var loaded bool
		if v, loaded = p.pools.LoadOrStore(ep, pl); !loaded {
			p.wg.Add(1)
			go pl.watch()
		}
	}
	return v.(*upPool).get()
}

// watch closes the pool, cutting its streams, when the endpoint is closed
// for good, and forgets it.
func (pl *upPool) watch() {
	defer pl.p.wg.Done()
	select {
	case <-pl.ep.Closed():
		pl.p.pools.Delete(pl.ep)
		pl.close("vigil: endpoint " + pl.ep.Address() + " was removed from its cluster")
	case <-pl.p.done:
	}
}

func (pl *upPool) get() (*upConn, error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.closed {
		return nil, errors.New("endpoint removed")
	}
	for _, uc := range pl.conns {
		if uc.usable() {
			return uc, nil
		}
	}
	if time.Now().Before(pl.failUntil) {
		return nil, pl.lastErr
	}
	if len(pl.conns) >= maxConnsPerEndpoint {
		// The backend's SETTINGS_MAX_CONCURRENT_STREAMS decides how many
		// connections its load takes; a tiny one must not make the proxy
		// open a connection per RPC.
		return nil, &capacityError{fmt.Sprintf("endpoint %s: its %d connections are at its concurrent stream limit", pl.ep.Address(), len(pl.conns))}
	}
	uc := &upConn{pl: pl, w: newSyncWriter(pl.p.acks), streams: map[uint32]*fstream{}, nextID: 1, maxStreams: math.MaxUint32}
	pl.conns = append(pl.conns, uc)
	pl.p.wg.Add(1)
	go uc.run()
	return uc, nil
}

// removeConn forgets uc; failed is why it could not connect, if so: the
// endpoint is then skipped for a backoff.
func (pl *upPool) removeConn(uc *upConn, failed error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if i := slices.Index(pl.conns, uc); i >= 0 {
		// slices.Delete clears the vacated slot: the connection (and its
		// buffers) must not stay reachable through spare capacity.
		pl.conns = slices.Delete(pl.conns, i, i+1)
	}
	if failed != nil {
		pl.backoff = min(max(pl.backoff*2, minBackoff), maxBackoff)
		pl.failUntil = time.Now().Add(pl.backoff)
		pl.lastErr = failed
	}
}

func (pl *upPool) close(reason string) {
	pl.mu.Lock()
	pl.closed = true
	pl.reason = reason
	conns := pl.conns
	pl.conns = nil
	pl.mu.Unlock()
	for _, uc := range conns {
		uc.kill(reason)
	}
}

// upConn is one HTTP/2 connection to a backend. w.mu guards its state.
type upConn struct {
	pl *upPool
	w  *h2writer
	br *bufio.Reader
	fr *http2.Framer
	hr *h2wire.HeaderReader // reads fr's frames, header blocks decoded

	ready      bool
	dead       bool
	draining   bool
	lostReason string
	queue      []*fstream // waiting for the connection to be ready
	streams    map[uint32]*fstream
	nextID     uint32
	maxStreams uint32
	// maxHeaderList is the backend's SETTINGS_MAX_HEADER_LIST_SIZE, 0 when
	// it announced none: a request over it is never sent there.
	maxHeaderList uint32
	nc            net.Conn
	idleTimer     *time.Timer
}

func (uc *upConn) usable() bool {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	return !uc.dead && !uc.draining && uint32(len(uc.streams)+len(uc.queue)) < uc.maxStreams && uc.nextID < math.MaxInt32-2
}

// add queues s on the connection, or opens it at once when ready. It
// reports false when the connection is already lost. The caller holds
// s.mu.
func (uc *upConn) add(s *fstream, carry []byte, end bool, fl *flusher) bool {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	if uc.dead || uc.draining {
		return false
	}
	if uc.idleTimer != nil {
		uc.idleTimer.Stop()
	}
	// s.req left any previous connection's halves (unplaced, moveConn).
	s.req = half{dst: uc.w, buf: carry, end: end, src: s.dc.w, srcID: s.downID, credited: &s.reqCredited}
	uc.w.halves.add(&s.req)
	if !uc.ready || uint32(len(uc.streams)) >= uc.maxStreams {
		// Until the handshake is done, or a stream slot is free.
		uc.queue = append(uc.queue, s)
		return true
	}
	uc.openLocked(s)
	fl.touchLocked(uc.w)
	return true
}

// openLocked sends s's headers on a new stream, then its buffered data.
func (uc *upConn) openLocked(s *fstream) {
	id := uc.nextID
	uc.nextID += 2
	uc.streams[id] = s
	s.req.id = id
	s.req.win = uc.w.initWin
	// The response half learns its source (for credit) under the client
	// connection's lock: upstream-then-downstream is the one nesting.
	s.dc.w.mu.Lock()
	s.resp.src, s.resp.srcID, s.resp.credited = uc.w, id, &s.respCredited
	s.dc.w.mu.Unlock()
	// opened also gates the outcome report (finish), so it is set with or
	// without metrics.
	if !s.opened.Swap(true) {
		if m := s.p.metrics; m != nil {
			m.RPCStarted(s.cluster.Name(), uc.pl.ep.Address())
		}
	}
	endNow := s.req.end && len(s.req.buf) == 0
	uc.w.writeHeadersLocked(id, s.headers, endNow)
	if endNow {
		s.req.done = true
		return
	}
	s.req.drainLocked()
}

// remove forgets a finished stream; a draining connection closes with its
// last stream.
func (uc *upConn) remove(s *fstream) {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	if id := s.req.id; id != 0 && uc.streams[id] == s {
		delete(uc.streams, id)
	}
	if i := slices.Index(uc.queue, s); i >= 0 {
		uc.queue = slices.Delete(uc.queue, i, i+1)
	}
	uc.w.halves.remove(&s.req)
	if uc.ready && len(uc.queue) > 0 && !uc.dead && !uc.draining {
		uc.openQueuedLocked()
		uc.w.flushLocked()
	}
	uc.idleLocked()
}

// openQueuedLocked opens the queued streams the backend's stream limit
// allows.
func (uc *upConn) openQueuedLocked() {
	for len(uc.queue) > 0 && uint32(len(uc.streams)) < uc.maxStreams && uc.nextID < math.MaxInt32-2 {
		s := uc.queue[0]
		uc.queue[0] = nil
		uc.queue = uc.queue[1:]
		if !s.req.done {
			uc.openLocked(s)
		}
	}
	if len(uc.queue) == 0 {
		uc.queue = nil
	}
}

// idleLocked closes a draining connection that carries no stream, or
// arms the idle timer of a usable one.
func (uc *upConn) idleLocked() {
	if len(uc.streams) > 0 || len(uc.queue) > 0 || uc.nc == nil || uc.dead {
		return
	}
	if uc.draining {
		_ = uc.nc.Close()
		return
	}
	if uc.idleTimer == nil {
		uc.idleTimer = time.AfterFunc(upstreamIdle, uc.onIdle)
		return
	}
	uc.idleTimer.Reset(upstreamIdle)
}

// onIdle closes the connection if it still carries no stream.
func (uc *upConn) onIdle() {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	if len(uc.streams) > 0 || len(uc.queue) > 0 || uc.dead || uc.draining {
		return
	}
	uc.draining = true
	_ = uc.nc.Close()
}

// kill closes the connection; its reader cuts the streams with reason.
func (uc *upConn) kill(reason string) {
	uc.w.mu.Lock()
	if uc.lostReason == "" {
		uc.lostReason = reason
	}
	nc := uc.nc
	uc.dead = true
	uc.w.mu.Unlock()
	if nc != nil {
		_ = nc.Close()
	}
}

// run dials the backend, completes the HTTP/2 handshake, opens the queued
// streams and then reads the backend's frames until the connection ends.
func (uc *upConn) run() {
	p := uc.pl.p
	defer p.wg.Done()
	addr := uc.pl.ep.Address()
	// ctx is what watchConnect cancels when the endpoint is no longer
	// wanted; the dial and the TLS handshake each have their own bound.
	ctx, cancel := context.WithCancel(p.stopping)
	stopWatch := uc.watchConnect(cancel)
	dialCtx, cancelDial := context.WithTimeout(ctx, dialTimeout)
	nc, err := (&net.Dialer{}).DialContext(dialCtx, "tcp", addr)
	cancelDial()
	if err != nil {
		cancel()
		stopWatch()
		if uerr := uc.unfit(); uerr != nil {
			uc.failConnect(uerr, false)
			return
		}
		uc.failConnect(fmt.Errorf("dial %s: %w", addr, err), true)
		return
	}
	if cfg := uc.pl.ep.TLSConfig(true); cfg != nil {
		nc, err = tlsHandshake(ctx, nc, cfg)
		if err != nil {
			cancel()
			stopWatch()
			if uerr := uc.unfit(); uerr != nil {
				uc.failConnect(uerr, false)
				return
			}
			uc.failConnect(fmt.Errorf("tls handshake with %s: %w", addr, err), true)
			return
		}
	}
	cancel()
	uc.w.mu.Lock()
	uc.nc = nc
	uc.w.setConnLocked(nc)
	dead, reason := uc.dead, uc.lostReasonOr("connection closed")
	if !dead {
		_, _ = uc.w.bw.WriteString(http2.ClientPreface)
		uc.w.note(uc.w.fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: streamWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
		))
		uc.w.note(uc.w.fr.WriteWindowUpdate(0, connWindow-65535))
		uc.w.flushLocked()
	}
	uc.w.mu.Unlock()
	if dead {
		stopWatch()
		_ = nc.Close()
		uc.failConnect(errors.New(reason), false)
		return
	}
	uc.br = bufio.NewReaderSize(uc.w.io, bufSize)
	uc.fr = http2.NewFramer(nil, uc.br)
	uc.fr.SetReuseFrames()
	// We advertise no SETTINGS_MAX_FRAME_SIZE: the default is all we read.
	uc.fr.SetMaxReadFrameSize(defaultMaxFrame)
	// Header blocks are decoded into storage reused frame after frame.
	uc.hr = h2wire.NewHeaderReader(uc.fr, 4096, maxHeaderListSize)

	// The backend is usable once its SETTINGS arrive: a server that
	// accepts and then resets, hangs, or is not HTTP/2 fails here, before
	// any stream was sent, and the queued RPCs go elsewhere.
	settings, err := uc.handshake(nc)
	stopWatch()
	var credits []credit
	if err == nil {
		uc.w.mu.Lock()
		credits, err = uc.applySettingsLocked(settings)
		uc.w.mu.Unlock()
	}
	if err == nil && uc.maxStreams == 0 {
		err = errors.New("the backend allows no stream (SETTINGS_MAX_CONCURRENT_STREAMS=0)")
	}
	if err != nil {
		_ = nc.Close()
		uc.failConnect(fmt.Errorf("handshake with %s: %w", addr, err), uc.unfit() == nil)
		return
	}
	uc.pl.mu.Lock()
	uc.pl.backoff = 0
	uc.pl.mu.Unlock()
	var fl flusher
	uc.w.mu.Lock()
	uc.ready = true
	// Queued before the backend's limit was known: a request over it
	// moves on, unsent.
	var tooBig []*fstream
	if limit := uc.maxHeaderList; limit > 0 {
		kept := uc.queue[:0]
		for _, s := range uc.queue {
			if s.hdrSize > limit {
				tooBig = append(tooBig, s)
				continue
			}
			kept = append(kept, s)
		}
		clear(uc.queue[len(kept):])
		uc.queue = kept
	}
	uc.openQueuedLocked()
	// RPCs queued beyond the backend's stream limit (unknown until now)
	// try other connections to the endpoint.
	excess := uc.queue
	uc.queue = nil
	uc.idleLocked()
	fl.touchLocked(uc.w)
	uc.w.mu.Unlock()
	sendCredits(&fl, credits)
	for _, s := range tooBig {
		s.unplaced(uc, uc.checkHeaderList(s.hdrSize), &fl)
	}
	for _, s := range excess {
		s.moveConn(uc, &fl)
	}
	fl.flushAll()

	uc.read(&fl)
}

// unfit tells why the connection being set up is no longer wanted: its
// endpoint was excluded (evicted) or closed, or the pool killed it.
func (uc *upConn) unfit() error {
	ep := uc.pl.ep
	select {
	case <-ep.Closed():
		return fmt.Errorf("endpoint %s was removed", ep.Address())
	default:
	}
	if ep.Excluded() {
		return fmt.Errorf("endpoint %s was evicted while connecting", ep.Address())
	}
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	if uc.dead {
		return errors.New(uc.lostReasonOr("connection closed"))
	}
	return nil
}

func (uc *upConn) lostReasonOr(def string) string {
	if uc.lostReason != "" {
		return uc.lostReason
	}
	return def
}

// watchConnect checks every connectPoll, while the connection is set up,
// whether it is still wanted (see unfit); once not, it ends the attempt:
// cancelDial stops the dial, a past read deadline the handshake. The
// returned func stops the watch.
func (uc *upConn) watchConnect(cancelDial context.CancelFunc) (stop func()) {
	var (
		stopped atomic.Bool
		timer   atomic.Pointer[time.Timer]
	)
	check := func() {
		if stopped.Load() {
			return
		}
		if uc.unfit() != nil {
			cancelDial()
			uc.w.mu.Lock()
			nc := uc.nc
			uc.w.mu.Unlock()
			if nc != nil {
				_ = nc.SetReadDeadline(time.Unix(1, 0))
			}
			return
		}
		if t := timer.Load(); t != nil {
			t.Reset(connectPoll)
		}
	}
	timer.Store(time.AfterFunc(connectPoll, check))
	return func() {
		stopped.Store(true)
		timer.Load().Stop()
	}
}

// tlsHandshake secures nc with cfg within upHandshakeTimeout (a TLS
// server answers a ClientHello as fast as an HTTP/2 one sends SETTINGS),
// or until ctx ends; on failure nc is closed. The data path's reads and
// writes then go through crypto/tls, not rawIO's system calls.
func tlsHandshake(ctx context.Context, nc net.Conn, cfg *tls.Config) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, upHandshakeTimeout)
	defer cancel()
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = nc.Close()
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "h2" {
		_ = nc.Close()
		return nil, fmt.Errorf("the backend chose ALPN %q, not h2", p)
	}
	return tc, nil
}

// frameHeaderLen is the size of an HTTP/2 frame header.
const frameHeaderLen = h2wire.FrameHeaderLen

// handshake waits for the backend's first frame, which must be SETTINGS
// (RFC 9113 3.4), for at most upHandshakeTimeout, or until the endpoint
// is no longer wanted.
func (uc *upConn) handshake(nc net.Conn) (*http2.SettingsFrame, error) {
	_ = nc.SetReadDeadline(time.Now().Add(upHandshakeTimeout))
	// Checked after the deadline is set: watchConnect's abort may have
	// come before it.
	if err := uc.unfit(); err != nil {
		return nil, err
	}
	// The frame header alone tells an HTTP/2 server from anything else (an
	// HTTP/1.1 answer, garbage): judge it before waiting for a payload
	// that may never come.
	hdr, err := uc.br.Peek(frameHeaderLen)
	if err != nil {
		return nil, uc.handshakeError(err, hdr)
	}
	if err := h2wire.CheckServerPreface(hdr, defaultMaxFrame); err != nil {
		return nil, err
	}
	f, err := uc.hr.ReadFrame()
	if err != nil {
		return nil, uc.handshakeError(err, nil)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return nil, errors.New("the first frame is not SETTINGS")
	}
	_ = nc.SetReadDeadline(time.Time{})
	return sf, nil
}

func (uc *upConn) handshakeError(err error, got []byte) error {
	if uerr := uc.unfit(); uerr != nil {
		return uerr
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no HTTP/2 SETTINGS within %v", upHandshakeTimeout)
	}
	if len(got) > 0 {
		return fmt.Errorf("%w after %q", err, got)
	}
	return err
}

func (uc *upConn) applySettingsLocked(f *http2.SettingsFrame) ([]credit, error) {
	credits, err := uc.w.settingsLocked(f, true, nil)
	if err != nil {
		return credits, err
	}
	if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
		uc.maxStreams = v
	}
	if v, ok := f.Value(http2.SettingMaxHeaderListSize); ok {
		uc.maxHeaderList = v
	}
	return credits, nil
}

// capacityError says that an endpoint is reachable but does not take an
// RPC: its connections are all at its stream limit, or the request's
// header list is over its SETTINGS_MAX_HEADER_LIST_SIZE.
type capacityError struct{ msg string }

func (e *capacityError) Error() string { return e.msg }

// checkHeaderList tells whether a request header list of size n may be
// sent on uc (a connection still connecting takes it, and is judged when
// its SETTINGS arrive).
func (uc *upConn) checkHeaderList(n uint32) error {
	uc.w.mu.Lock()
	limit := uc.maxHeaderList
	uc.w.mu.Unlock()
	if limit > 0 && n > limit {
		return &capacityError{fmt.Sprintf("endpoint %s: the request header list of %d bytes is over its SETTINGS_MAX_HEADER_LIST_SIZE of %d", uc.pl.ep.Address(), n, limit)}
	}
	return nil
}

// failConnect: the connection never became usable; its queued streams
// (nothing of which was sent) move to other endpoints. backoff: the
// endpoint is skipped for a while (not when it was given up on purpose).
func (uc *upConn) failConnect(err error, backoff bool) {
	uc.w.mu.Lock()
	uc.dead = true
	if uc.lostReason == "" {
		uc.lostReason = err.Error()
	}
	queue := uc.queue
	uc.queue = nil
	uc.w.mu.Unlock()
	var failed error
	if backoff {
		failed = err
		// One failed attempt to reach the endpoint, for outlier
		// detection (the streams it held move on and are not counted).
		uc.pl.ep.Report(codes.Unavailable)
	}
	uc.pl.removeConn(uc, failed)
	uc.pl.p.log.Debug("endpoint unreachable", "endpoint", uc.pl.ep.Address(), "error", err, "rpcs_moved", len(queue))
	for _, s := range queue {
		s.unplaced(uc, err, nil)
	}
}

func (uc *upConn) read(fl *flusher) {
	for {
		f, err := uc.hr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				uc.w.mu.Lock()
				s := uc.streams[se.StreamID]
				uc.w.mu.Unlock()
				if s != nil {
					s.backendReset(http2.ErrCodeProtocol, fl)
				}
				continue
			}
			var xe http2.ConnectionError
			if errors.As(err, &xe) {
				uc.protocolError(asConnError(err))
			}
			uc.lost(err)
			fl.flushAll()
			return
		}
		if err := uc.handle(f, fl); err != nil {
			fl.flushAll()
			uc.protocolError(asConnError(err))
			uc.lost(err)
			fl.flushAll()
			return
		}
		if uc.br.Buffered() == 0 {
			fl.flushAll()
		}
	}
}

// protocolError tells the backend why the connection ends (GOAWAY) and
// records the reason its streams fail with.
func (uc *upConn) protocolError(ce connError) {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	if uc.lostReason == "" {
		uc.lostReason = fmt.Sprintf("vigil: endpoint %s broke HTTP/2: %v", uc.pl.ep.Address(), ce)
	}
	var debug []byte
	if ce.reason != "" {
		debug = []byte(ce.reason)
	}
	uc.w.note(uc.w.fr.WriteGoAway(0, ce.code, debug))
	uc.w.flushLocked()
}

func (uc *upConn) stream(id uint32) *fstream {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	return uc.streams[id]
}

// handle processes one frame from the backend. An error is a connection
// error: the caller sends GOAWAY and ends the connection.
func (uc *upConn) handle(f http2.Frame, fl *flusher) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		s := uc.stream(f.StreamID)
		if s == nil {
			return nil
		}
		if f.Truncated {
			// The framer dropped the fields past the limit: forwarding the
			// rest would lose response metadata or the status silently.
			s.backendBroke(http2.ErrCodeCancel, f.StreamEnded(),
				fmt.Sprintf("vigil: endpoint %s sent a header list over the limit of %d bytes", uc.pl.ep.Address(), maxHeaderListSize), fl)
			return nil
		}
		s.backendHeaders(f.Fields, f.StreamEnded(), fl)
	case *http2.DataFrame:
		n := int64(f.Length)
		uc.w.mu.Lock()
		ok := uc.w.receivedLocked(n)
		fl.touchLocked(uc.w)
		s := uc.streams[f.StreamID]
		uc.w.mu.Unlock()
		if !ok {
			return connError{http2.ErrCodeFlowControl, "DATA over the connection's flow-control window"}
		}
		if s == nil {
			return nil
		}
		if s.respRecvd += n; s.respRecvd > s.respCredited.Load()+streamWindow {
			s.backendBroke(http2.ErrCodeFlowControl, false, "vigil: the backend overran the stream's flow-control window", fl)
			return nil
		}
		s.backendData(f.Data(), f.StreamEnded(), fl)
	case *http2.RSTStreamFrame:
		if s := uc.stream(f.StreamID); s != nil {
			if f.ErrCode == http2.ErrCodeRefusedStream && s.retry(uc, ReplayRefused, fl) {
				return nil
			}
			s.backendReset(f.ErrCode, fl)
		}
	case *http2.WindowUpdateFrame:
		var credits []credit
		ok := true
		var s *fstream
		uc.w.mu.Lock()
		if f.StreamID == 0 {
			credits, ok = uc.w.windowUpdateLocked(nil, int64(f.Increment), credits)
		} else if s = uc.streams[f.StreamID]; s != nil {
			credits, ok = uc.w.windowUpdateLocked(&s.req, int64(f.Increment), credits)
		}
		fl.touchLocked(uc.w)
		uc.w.mu.Unlock()
		sendCredits(fl, credits)
		if !ok {
			if s == nil {
				return connError{http2.ErrCodeFlowControl, "WINDOW_UPDATE takes the connection window over 2^31-1"}
			}
			s.backendBroke(http2.ErrCodeFlowControl, false, "vigil: the backend's WINDOW_UPDATE took the stream's window over 2^31-1", fl)
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		uc.w.mu.Lock()
		credits, err := uc.applySettingsLocked(f)
		fl.touchLocked(uc.w)
		uc.w.mu.Unlock()
		if err != nil {
			return err
		}
		sendCredits(fl, credits)
	case *http2.PingFrame:
		if !f.IsAck() {
			uc.w.mu.Lock()
			if uc.w.pingLocked(f.Data) {
				fl.touchLocked(uc.w)
			}
			uc.w.mu.Unlock()
		}
	case *http2.PushPromiseFrame:
		// Push is disabled in our SETTINGS (RFC 9113 8.4); the promise's
		// header block was not decoded either, so HPACK state is lost.
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE although push is disabled"}
	case *http2.GoAwayFrame:
		// No new streams here; streams the backend never processed are
		// refused to their clients, which may retry them safely.
		var refused []*fstream
		uc.w.mu.Lock()
		uc.draining = true
		for id, s := range uc.streams {
			if id > f.LastStreamID {
				refused = append(refused, s)
			}
		}
		// Streams still waiting for a slot were never sent: they move on.
		queue := uc.queue
		uc.queue = nil
		empty := len(uc.streams) == 0
		uc.w.mu.Unlock()
		for _, s := range queue {
			s.unplaced(uc, errors.New("the backend is going away"), fl)
		}
		for _, s := range refused {
			if !s.retry(uc, ReplayGoAway, fl) {
				s.backendLost("", true, fl)
			}
		}
		if empty {
			_ = uc.nc.Close()
		}
	}
	return nil
}

// lost: the connection ended. Streams still on it fail with UNAVAILABLE
// (they were sent: never replayed).
func (uc *upConn) lost(err error) {
	uc.w.mu.Lock()
	uc.dead = true
	if uc.idleTimer != nil {
		uc.idleTimer.Stop()
	}
	reason := uc.lostReason
	if reason == "" {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		if werr := uc.w.err; werr != nil && !errors.Is(werr, net.ErrClosed) {
			// A failed write closed the connection: the read error that
			// followed says less.
			err = werr
		}
		reason = fmt.Sprintf("vigil: connection to endpoint %s lost: %v", uc.pl.ep.Address(), err)
	}
	streams := make([]*fstream, 0, len(uc.streams))
	for _, s := range uc.streams {
		streams = append(streams, s)
	}
	queue := uc.queue
	uc.queue = nil
	if uc.w.err == nil {
		uc.w.err = net.ErrClosed
	}
	uc.w.mu.Unlock()
	_ = uc.nc.Close()
	uc.pl.removeConn(uc, nil)
	if len(streams) > 0 {
		uc.pl.p.log.Warn("connection to endpoint lost with RPCs in flight", "endpoint", uc.pl.ep.Address(), "rpcs", len(streams), "reason", reason)
	}
	for _, s := range queue {
		s.unplaced(uc, errors.New(reason), nil)
	}
	for _, s := range streams {
		s.backendLost(reason, false, nil)
	}
}
