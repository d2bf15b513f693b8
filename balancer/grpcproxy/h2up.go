package grpcproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
)

const (
	// dialTimeout bounds connecting to a backend, HTTP/2 handshake included.
	dialTimeout = 5 * time.Second
	// handshakeTimeout bounds a client's HTTP/2 preface.
	handshakeTimeout = 10 * time.Second
	// Backoff after a failed connection to a backend: RPCs skip the
	// endpoint at once (as grpc-go fails fast in TRANSIENT_FAILURE) until
	// the next attempt.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// upstreamIdle closes a backend connection without streams for that long
// (a removed endpoint that was never Closed keeps none open). A variable
// for tests.
var upstreamIdle = 10 * time.Minute

// upPool holds the frame engine's connections to one endpoint. The
// endpoint's own grpc.ClientConn stays with its probes.
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
	uc := &upConn{pl: pl, w: newH2writer(nil), streams: map[uint32]*fstream{}, nextID: 1, maxStreams: math.MaxUint32}
	pl.conns = append(pl.conns, uc)
	pl.p.wg.Add(1)
	go uc.run()
	return uc, nil
}

func (pl *upPool) removeConn(uc *upConn, dialErr error) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for i, c := range pl.conns {
		if c == uc {
			pl.conns = append(pl.conns[:i], pl.conns[i+1:]...)
			break
		}
	}
	if dialErr != nil {
		pl.backoff = min(max(pl.backoff*2, minBackoff), maxBackoff)
		pl.failUntil = time.Now().Add(pl.backoff)
		pl.lastErr = dialErr
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

	ready      bool
	dead       bool
	draining   bool
	lostReason string
	queue      []*fstream // waiting for the connection to be ready
	streams    map[uint32]*fstream
	nextID     uint32
	maxStreams uint32
	nc         net.Conn
	idleTimer  *time.Timer
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
	s.req = half{dst: uc.w, buf: carry, end: end, src: s.dc.w, srcID: s.downID, credited: &s.reqCredited}
	uc.w.halves[&s.req] = struct{}{}
	if !uc.ready {
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
	if m := s.p.metrics; m != nil && !s.opened.Swap(true) {
		m.RPCStarted(s.cluster.Name(), uc.pl.ep.Address())
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
	delete(uc.w.halves, &s.req)
	if len(uc.streams) > 0 || len(uc.queue) > 0 || uc.nc == nil {
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
	ctx, cancel := context.WithTimeout(p.stopping, dialTimeout)
	nc, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	cancel()
	if err != nil {
		uc.failConnect(fmt.Errorf("dial %s: %w", addr, err))
		return
	}
	uc.w.mu.Lock()
	uc.nc = nc
	uc.w.nc = nc
	uc.w.bw.Reset(nc)
	dead := uc.dead
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
		_ = nc.Close()
		uc.failConnect(errors.New(uc.lostReason))
		return
	}
	uc.br = bufio.NewReaderSize(nc, bufSize)
	uc.fr = http2.NewFramer(nil, uc.br)
	uc.fr.SetReuseFrames()
	uc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	uc.fr.MaxHeaderListSize = maxHeaderListSize

	// The backend is usable once its SETTINGS arrive: a server that
	// accepts and then resets (or is not HTTP/2) fails here, before any
	// stream was sent, and the queued RPCs go elsewhere.
	_ = nc.SetReadDeadline(time.Now().Add(dialTimeout))
	f, err := uc.fr.ReadFrame()
	if err == nil {
		if _, ok := f.(*http2.SettingsFrame); !ok {
			err = fmt.Errorf("backend %s did not start with SETTINGS", addr)
		}
	}
	if err != nil {
		_ = nc.Close()
		uc.failConnect(fmt.Errorf("handshake with %s: %w", addr, err))
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	uc.pl.mu.Lock()
	uc.pl.backoff = 0
	uc.pl.mu.Unlock()
	var fl flusher
	uc.w.mu.Lock()
	uc.ready = true
	credits := uc.applySettingsLocked(f.(*http2.SettingsFrame))
	for _, s := range uc.queue {
		if !s.req.done {
			uc.openLocked(s)
		}
	}
	uc.queue = nil
	fl.touchLocked(uc.w)
	uc.w.mu.Unlock()
	sendCredits(&fl, credits)
	fl.flushAll()

	uc.read(&fl)
}

func (uc *upConn) applySettingsLocked(f *http2.SettingsFrame) []credit {
	if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
		uc.maxStreams = v
	}
	return uc.w.settingsLocked(f, nil)
}

// failConnect: the connection never became usable; its queued streams
// (nothing of which was sent) move to other endpoints.
func (uc *upConn) failConnect(err error) {
	uc.w.mu.Lock()
	uc.dead = true
	if uc.lostReason == "" {
		uc.lostReason = err.Error()
	}
	queue := uc.queue
	uc.queue = nil
	uc.w.mu.Unlock()
	uc.pl.removeConn(uc, err)
	uc.pl.p.log.Debug("endpoint unreachable", "endpoint", uc.pl.ep.Address(), "error", err, "rpcs_moved", len(queue))
	for _, s := range queue {
		s.unplaced(uc, err, nil)
	}
}

func (uc *upConn) read(fl *flusher) {
	for {
		f, err := uc.fr.ReadFrame()
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
			uc.lost(err)
			fl.flushAll()
			return
		}
		uc.handle(f, fl)
		if uc.br.Buffered() == 0 {
			fl.flushAll()
		}
	}
}

func (uc *upConn) stream(id uint32) *fstream {
	uc.w.mu.Lock()
	defer uc.w.mu.Unlock()
	return uc.streams[id]
}

func (uc *upConn) handle(f http2.Frame, fl *flusher) {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		if s := uc.stream(f.StreamID); s != nil {
			s.backendHeaders(f.Fields, f.StreamEnded(), fl)
		}
	case *http2.DataFrame:
		n := int64(f.Length)
		uc.w.mu.Lock()
		ok := uc.w.receivedLocked(n)
		fl.touchLocked(uc.w)
		s := uc.streams[f.StreamID]
		uc.w.mu.Unlock()
		if !ok {
			uc.kill(fmt.Sprintf("vigil: endpoint %s overran its flow-control window", uc.pl.ep.Address()))
			return
		}
		if s == nil {
			return
		}
		if s.respRecvd += n; s.respRecvd > s.respCredited.Load()+streamWindow {
			s.fail(codes.Internal, "vigil: the backend overran the stream's flow-control window", fl)
			return
		}
		s.backendData(f.Data(), f.StreamEnded(), fl)
	case *http2.RSTStreamFrame:
		if s := uc.stream(f.StreamID); s != nil {
			s.backendReset(f.ErrCode, fl)
		}
	case *http2.WindowUpdateFrame:
		var credits []credit
		uc.w.mu.Lock()
		if f.StreamID == 0 {
			credits = uc.w.windowUpdateLocked(nil, int64(f.Increment), credits)
		} else if s := uc.streams[f.StreamID]; s != nil {
			credits = uc.w.windowUpdateLocked(&s.req, int64(f.Increment), credits)
		}
		fl.touchLocked(uc.w)
		uc.w.mu.Unlock()
		sendCredits(fl, credits)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return
		}
		uc.w.mu.Lock()
		credits := uc.applySettingsLocked(f)
		fl.touchLocked(uc.w)
		uc.w.mu.Unlock()
		sendCredits(fl, credits)
	case *http2.PingFrame:
		if !f.IsAck() {
			uc.w.mu.Lock()
			uc.w.note(uc.w.fr.WritePing(true, f.Data))
			fl.touchLocked(uc.w)
			uc.w.mu.Unlock()
		}
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
		empty := len(uc.streams) == 0
		uc.w.mu.Unlock()
		for _, s := range refused {
			s.backendLost("", true, fl)
		}
		if empty {
			_ = uc.nc.Close()
		}
	}
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
