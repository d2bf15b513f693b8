package grpcproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/balancer"
	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/accesslog"
	"github.com/vigil-proxy/vigil/internal/grpccode"
	"github.com/vigil-proxy/vigil/internal/h2wire"
)

// fstream is one forwarded RPC in the frame engine.
//
// Locks: mu guards the stream's placement (uc, ep, attempts, request
// headers kept for a retry, finished flags); req is guarded by its
// upstream writer's lock and resp by the client connection's writer lock.
// Order: mu before a writer lock; never two writer locks.
type fstream struct {
	p      *Proxy
	dc     *downConn
	downID uint32
	start  time.Time

	mu sync.Mutex
	// route is the RPC's route (the table's default included) and
	// cluster its cluster: the RPC is picked and retried in it only.
	route    *route.Entry
	cluster  *balancer.Cluster
	timer    *time.Timer // the route's timeout, nil without one
	uc       *upConn
	ep       *balancer.Endpoint
	headers  []hpack.HeaderField // request headers, kept for a retry
	hdrSize  uint32              // their size as SETTINGS_MAX_HEADER_LIST_SIZE counts it
	carry    []byte              // request data while between endpoints
	carryEnd bool                // the client half-closed while between endpoints
	tried    [maxRetries + 1]*balancer.Endpoint
	attempts int
	finished bool
	// key is the hash the cluster's policy places the RPC by (see
	// keyOf), the same for every attempt, so that a retry walks on from
	// the endpoint the key belongs to.
	key uint64

	req  half // client -> backend (dst: uc.w)
	resp half // backend -> client (dst: dc.w)

	reqLimit, respLimit msgLimit
	// Flow control of what the proxy receives: bytes received on each side
	// (by that side's reader goroutine only) against the stream credit
	// granted back (by whichever goroutine forwarded the bytes).
	reqRecvd, respRecvd       int64
	reqCredited, respCredited atomic.Int64
	opened                    atomic.Bool // headers went to a backend
	// reqEnded: the client sent END_STREAM (read and written by the
	// client connection's reader goroutine only).
	reqEnded    bool
	respStarted bool // response headers sent (under dc.w.mu)
	// reqLen is the request's content-length, -1 when it has none, and
	// reqBody the DATA payload received so far (reader goroutine only).
	reqLen, reqBody int64
	// plain: not a gRPC request (not POST), answered by the proxy once
	// the request is in; head: a HEAD request, answered without a body.
	plain, head bool
	plainStatus string // the :status of a plain answer: 405 when ""

	local *localCall

	// The access log's, set only while one is on (al not nil): what the
	// client asked for, and the DATA payload bytes each way (counted by
	// the two sides' reader goroutines, read by whichever finishes).
	al                       *accesslog.Logger
	method, authority, agent string
	reqBytes, respBytes      atomic.Int64

	// What a transparent retry would replay (s.mu; see replay.go).
	replay    []byte
	replayBuf *[]byte // replay's pooled backing
	replayEnd bool    // the client's END_STREAM is in replay
	replayOff bool    // no retry any more
	replays   int
}

// msgLimit follows the gRPC length-prefixed messages of one direction
// through DATA frames and reports a message over the limit.
type msgLimit struct {
	hdr  [5]byte
	hdrN int
	left uint32 // message bytes still to come
}

// feed returns the size of a message over max, or 0.
func (m *msgLimit) feed(data []byte, max uint32) uint32 {
	for len(data) > 0 {
		if m.left > 0 {
			n := min(uint32(len(data)), m.left)
			m.left -= n
			data = data[n:]
			continue
		}
		n := copy(m.hdr[m.hdrN:], data)
		m.hdrN += n
		data = data[n:]
		if m.hdrN == 5 {
			m.hdrN = 0
			m.left = binary.BigEndian.Uint32(m.hdr[1:])
			if m.left > max {
				return m.left
			}
		}
	}
	return 0
}

// open routes a new stream (its :path and :authority are path and
// authority) and places it on an endpoint of its route's cluster.
func (s *fstream) open(path, authority string, headers []hpack.HeaderField, endStream bool, fl *flusher) {
	rt := s.p.routes.Load().GRPC(path, authority)
	s.mu.Lock()
	s.route = rt
	if rt != nil {
		s.cluster = rt.Cluster
		if rt.Timeout > 0 && rt.Cluster != nil {
			headers = applyTimeout(headers, rt.Timeout)
			s.startTimeoutLocked(rt.Timeout)
		}
	}
	s.headers = headers
	s.hdrSize = headerListSize(headers)
	s.carryEnd = endStream
	if s.cluster != nil {
		s.key = keyOf(s.cluster.Snapshot().HashHeader, headers)
	}
	s.mu.Unlock()
	if rt == nil || rt.Cluster == nil {
		s.fail(codes.Unimplemented, "no route for "+path, fl)
		return
	}
	s.place(nil, fl)
}

// keyOf is the hash an RPC with headers is placed by: that of the first
// value of the metadata key header (a hashing policy's, see
// balancer.HashPolicy), or a random one when the policy hashes no header
// or the RPC lacks it. The policies that do not hash ignore it. It does
// not allocate: hpack gave the names lower case, as gRPC metadata keys are
// (the configuration's header is lower case too).
func keyOf(header string, headers []hpack.HeaderField) uint64 {
	if header != "" {
		for i := range headers {
			if headers[i].Name == header {
				return balancer.HashString(headers[i].Value)
			}
		}
	}
	return balancer.RandomHash()
}

// place picks an endpoint that was not tried yet and queues the stream on
// one of its connections, moving the request data received so far with
// it. lastErr is why the previous endpoint was unreachable, if one was.
func (s *fstream) place(lastErr error, fl *flusher) {
	placed, lastErr := s.placeOther(lastErr, fl)
	if placed {
		return
	}
	s.failUnplaced(lastErr, fl)
}

// placeOther is place without the failure: it reports whether s was put
// on an endpoint it had not tried, and why not.
func (s *fstream) placeOther(lastErr error, fl *flusher) (bool, error) {
	p := s.p
	s.mu.Lock()
	defer s.mu.Unlock()
	cl := s.cluster
	for picks := 0; !s.finished && s.attempts <= p.retries && picks < 2*(p.retries+2); picks++ {
		ep := cl.PickHash(s.key, s.tried[:s.attempts])
		if ep == nil {
			break
		}
		if slices.Contains(s.tried[:s.attempts], ep) {
			continue
		}
		s.tried[s.attempts] = ep
		s.attempts++
		// A connection the pool hands out may close (idle, or lost) before
		// the stream is added: then ask the pool once more.
		for try := 0; try < 2; try++ {
			uc, err := p.upstream(ep)
			if err == nil {
				err = uc.checkHeaderList(s.hdrSize)
			}
			if err != nil {
				lastErr = err
				break
			}
			if uc.add(s, s.carry, s.carryEnd, fl) {
				s.carry = nil
				ep.Acquire()
				s.ep, s.uc = ep, uc
				return true, nil
			}
			lastErr = errors.New("connection lost")
		}
		if p.metrics != nil {
			p.metrics.RPCRetried(cl.Name(), ep.Address())
		}
	}
	return s.finished, lastErr
}

// failUnplaced ends a stream no endpoint took, saying why.
func (s *fstream) failUnplaced(lastErr error, fl *flusher) {
	s.mu.Lock()
	cl, finished, attempts := s.cluster, s.finished, s.attempts
	s.mu.Unlock()
	switch {
	case finished:
	case errors.As(lastErr, new(*capacityError)):
		// Reachable, but this RPC does not fit: what the backend's own
		// SETTINGS would have refused a direct client.
		s.fail(codes.ResourceExhausted, fmt.Sprintf("vigil: no endpoint in cluster %s takes the RPC (tried %d): %v", cl.Name(), attempts, lastErr), fl)
	case lastErr != nil:
		s.fail(codes.Unavailable, fmt.Sprintf("vigil: no reachable endpoint in cluster %s (tried %d): %v", cl.Name(), attempts, lastErr), fl)
	default:
		s.fail(codes.Unavailable, "no healthy upstream in cluster "+cl.Name(), fl)
	}
}

// unplaced is called when uc failed before s's headers went out: nothing
// was sent, so the stream, with its buffered request data, moves on.
func (s *fstream) unplaced(uc *upConn, err error, fl *flusher) {
	s.mu.Lock()
	if s.uc != uc || s.finished {
		s.mu.Unlock()
		return
	}
	uc.w.mu.Lock()
	carry, end := s.req.buf, s.req.end
	s.req.buf, s.req.done = nil, true
	uc.w.halves.remove(&s.req)
	uc.w.mu.Unlock()
	s.carry = append(carry, s.carry...)
	s.carryEnd = s.carryEnd || end
	ep := s.ep
	s.ep, s.uc = nil, nil
	s.mu.Unlock()
	if ep != nil {
		ep.Release()
	}
	s.place(err, fl)
}

// moveConn moves s, queued on from beyond the backend's stream limit
// (nothing of it was sent), to another connection to the same endpoint;
// when the pool opens no more, it waits for a slot on from; when from is
// gone meanwhile, it goes to another endpoint.
func (s *fstream) moveConn(from *upConn, fl *flusher) {
	s.mu.Lock()
	if s.uc != from || s.finished {
		s.mu.Unlock()
		return
	}
	from.w.mu.Lock()
	carry, end := s.req.buf, s.req.end
	s.req.buf, s.req.done = nil, true
	from.w.halves.remove(&s.req)
	from.w.mu.Unlock()
	carry = append(carry, s.carry...)
	end = end || s.carryEnd
	s.carry, s.carryEnd = nil, false
	uc, err := s.p.upstream(s.ep)
	if err != nil {
		uc = from
	}
	placed := uc.add(s, carry, end, fl)
	if !placed && uc != from {
		uc, placed = from, from.add(s, carry, end, fl)
	}
	if placed {
		s.uc = uc
		s.mu.Unlock()
		return
	}
	s.carry, s.carryEnd = carry, end
	ep := s.ep
	s.ep, s.uc = nil, nil
	s.mu.Unlock()
	ep.Release()
	s.place(errors.New("connection lost"), fl)
}

// clientData forwards request bytes (and the client's half-close).
func (s *fstream) clientData(data []byte, end bool, fl *flusher) {
	if s.local != nil {
		s.local.data(data, end, fl)
		return
	}
	if len(data) > 0 {
		if big := s.reqLimit.feed(data, uint32(s.p.maxMsg)); big > 0 {
			s.cut(codes.ResourceExhausted, fmt.Sprintf("vigil: request message of %d bytes is over the listener's limit of %d", big, s.p.maxMsg), fl)
			return
		}
	}
	s.mu.Lock()
	s.keepLocked(data, end)
	uc := s.uc
	if uc == nil {
		// Between two endpoints: keep the data for the next one.
		if !s.finished {
			s.carry = append(s.carry, data...)
			s.carryEnd = s.carryEnd || end
		}
		s.mu.Unlock()
		return
	}
	uc.w.mu.Lock()
	s.mu.Unlock()
	n := s.req.sendLocked(data, end)
	c, ok := s.req.owedLocked(n)
	fl.touchLocked(uc.w)
	uc.w.mu.Unlock()
	if ok {
		c.sendWith(fl)
	}
}

// clientReset: the client cancelled the stream (or its connection ended).
func (s *fstream) clientReset() {
	if s.local != nil {
		s.local.cancel()
	}
	s.mu.Lock()
	uc := s.uc
	s.mu.Unlock()
	if uc != nil {
		uc.w.mu.Lock()
		s.req.resetLocked(http2.ErrCodeCancel)
		uc.w.flushLocked()
		uc.w.mu.Unlock()
		uc.remove(s)
	}
	s.dc.w.mu.Lock()
	// The client no longer counts the stream either.
	s.resp.uncountLocked()
	s.resp.done, s.resp.closed = true, true
	s.resp.buf = nil
	s.dc.w.mu.Unlock()
	s.finish(codes.Canceled)
}

// backendHeaders forwards the backend's response headers or trailers.
func (s *fstream) backendHeaders(fields []hpack.HeaderField, end bool, fl *flusher) {
	s.backendAnswered()
	w := s.dc.w
	w.mu.Lock()
	code := codes.OK
	if end {
		code = codes.Unknown
		for _, f := range fields {
			if f.Name == "grpc-status" {
				if c, ok := h2wire.ParseGRPCStatus(f.Value); ok {
					code = c
				}
			}
		}
		s.resp.trailersLocked(fields)
		s.respStarted = true
	} else if !s.respStarted && !s.resp.done {
		w.writeHeadersLocked(s.downID, fields, false)
		s.respStarted = true
	}
	fl.touchLocked(w)
	written := s.endedLocked(end, code)
	w.mu.Unlock()
	if end {
		s.backendEnded(code, written)
	}
}

// endedLocked tells, when the backend ended the stream, whether the client
// has everything already; if not, the stream finishes when the last of it
// is written (see drainBlockedLocked).
func (s *fstream) endedLocked(end bool, code codes.Code) bool {
	if !end || s.resp.done {
		return true
	}
	s.resp.endStream, s.resp.endCode = s, code
	return false
}

// backendData forwards response bytes to the client.
func (s *fstream) backendData(data []byte, end bool, fl *flusher) {
	if len(data) > 0 {
		if big := s.respLimit.feed(data, uint32(s.p.maxMsg)); big > 0 {
			s.cut(codes.ResourceExhausted, fmt.Sprintf("vigil: response message of %d bytes is over the listener's limit of %d", big, s.p.maxMsg), fl)
			return
		}
	}
	if s.al != nil {
		s.respBytes.Add(int64(len(data)))
	}
	w := s.dc.w
	w.mu.Lock()
	n := s.resp.sendLocked(data, end)
	c, ok := s.resp.owedLocked(n)
	fl.touchLocked(w)
	written := s.endedLocked(end, codes.OK)
	w.mu.Unlock()
	if ok {
		c.sendWith(fl)
	}
	if end {
		s.backendEnded(codes.OK, written)
	}
}

// backendEnded: the backend finished the stream. The stream finishes now
// if the client has everything, else once the rest is written.
func (s *fstream) backendEnded(code codes.Code, written bool) {
	s.mu.Lock()
	uc := s.uc
	s.mu.Unlock()
	if uc != nil {
		uc.w.mu.Lock()
		// Nothing more goes to the backend, whatever the client sends.
		s.req.done, s.req.closed = true, true
		s.req.buf = nil
		uc.w.mu.Unlock()
		uc.remove(s)
	}
	if written {
		s.finish(code)
	}
}

// backendReset: the backend reset the stream; the client gets the same.
func (s *fstream) backendReset(code http2.ErrCode, fl *flusher) {
	if d := s.routeTimeoutPassed(); code == http2.ErrCodeCancel && d > 0 {
		// The backend gave up at the deadline vigil told it (grpc-go
		// resets with CANCEL then): the RPC ran out of its route's time.
		s.mu.Lock()
		uc := s.uc
		s.mu.Unlock()
		if uc != nil {
			uc.w.mu.Lock()
			s.req.done, s.req.closed = true, true
			s.req.buf = nil
			uc.w.mu.Unlock()
		}
		s.cut(codes.DeadlineExceeded, routeTimeoutMessage(d), fl)
		return
	}
	w := s.dc.w
	w.mu.Lock()
	ended := s.resp.done
	s.resp.resetLocked(code)
	fl.touchLocked(w)
	w.mu.Unlock()
	s.mu.Lock()
	uc := s.uc
	s.mu.Unlock()
	if uc != nil {
		uc.w.mu.Lock()
		s.req.done, s.req.closed = true, true
		s.req.buf = nil
		uc.w.mu.Unlock()
		uc.remove(s)
	}
	if ended {
		return
	}
	s.finish(grpccode.FromReset(code))
}

// backendBroke: the backend sent what the proxy cannot forward on this
// stream (a header list over the limit, more than the flow-control window
// allowed): the stream is reset there with rst, unless the backend ended
// it, and the RPC fails with INTERNAL.
func (s *fstream) backendBroke(rst http2.ErrCode, ended bool, msg string, fl *flusher) {
	s.mu.Lock()
	uc := s.uc
	s.mu.Unlock()
	if uc != nil {
		uc.w.mu.Lock()
		if ended {
			s.req.done, s.req.closed = true, true
			s.req.buf = nil
		}
		s.req.resetLocked(rst)
		fl.touchLocked(uc.w)
		uc.w.mu.Unlock()
	}
	s.fail(codes.Internal, msg, fl)
}

// backendLost: the backend connection failed after the stream's headers
// went out. The RPC is not replayed: the client gets UNAVAILABLE.
func (s *fstream) backendLost(reason string, refused bool, fl *flusher) {
	if refused {
		// GOAWAY said the backend never processed this stream: a REFUSED
		// reset lets the client retry it safely.
		s.backendReset(http2.ErrCodeRefusedStream, fl)
		return
	}
	s.fail(codes.Unavailable, reason, fl)
}

// fail ends the stream with a status from the proxy: trailers-only when
// no response headers went out yet. The backend side, if any, is reset.
func (s *fstream) fail(code codes.Code, msg string, fl *flusher) {
	s.mu.Lock()
	uc := s.uc
	s.mu.Unlock()
	if uc != nil {
		uc.w.mu.Lock()
		s.req.resetLocked(http2.ErrCodeCancel)
		fl.touchLocked(uc.w)
		uc.w.mu.Unlock()
		uc.remove(s)
	}
	w := s.dc.w
	w.mu.Lock()
	if !s.resp.done {
		s.resp.buf = nil
		if w.err == nil {
			w.writeHeadersLocked(s.downID, statusFields(code, msg, !s.respStarted), true)
		}
		s.resp.endLocked()
		s.respStarted = true
		fl.touchLocked(w)
	}
	w.mu.Unlock()
	s.finish(code)
}

// headerListSize is the size of a header list as HTTP/2 counts it for
// SETTINGS_MAX_HEADER_LIST_SIZE: names, values and 32 bytes per field.
func headerListSize(fields []hpack.HeaderField) uint32 {
	var n uint32
	for i := range fields {
		n += fields[i].Size()
	}
	return n
}

// plainBody is the answer to a request that is not gRPC.
const plainBody = "vigil: this is a gRPC listener: only gRPC requests (POST, content-type application/grpc) are served\n"

// plainHeaders are the response headers of a plain answer.
func plainHeaders(status string) []hpack.HeaderField {
	if status == "" {
		status = "405"
	}
	return []hpack.HeaderField{
		{Name: ":status", Value: status},
		{Name: "allow", Value: "POST"},
		{Name: "content-type", Value: "text/plain; charset=utf-8"},
		{Name: "content-length", Value: strconv.Itoa(len(plainBody))},
	}
}

// answerPlain answers a request that is not gRPC, once it is in, with
// HTTP 405 (not POST) or 415 (not a gRPC content-type) and a line saying
// what the listener serves.
func (s *fstream) answerPlain(fl *flusher) {
	w := s.dc.w
	w.mu.Lock()
	if !s.resp.done && w.err == nil {
		w.writeHeadersLocked(s.downID, plainHeaders(s.plainStatus), s.head)
		s.respStarted = true
		if s.head {
			s.resp.endLocked()
		} else {
			s.resp.sendLocked([]byte(plainBody), true)
		}
		fl.touchLocked(w)
	}
	written := s.endedLocked(true, codes.Unimplemented)
	w.mu.Unlock()
	if written {
		s.finish(codes.Unimplemented)
	}
}

// cut ends a stream the proxy refuses to carry on (message over the limit,
// endpoint removed, shutdown deadline).
func (s *fstream) cut(code codes.Code, msg string, fl *flusher) {
	s.fail(code, msg, fl)
}

// finish releases the stream once: its endpoint's in-flight count, its
// place in the client connection, metrics.
func (s *fstream) finish(code codes.Code) {
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return
	}
	s.finished = true
	s.dropReplayLocked()
	if s.timer != nil {
		s.timer.Stop()
	}
	ep, cl, attempts, rt := s.ep, s.cluster, s.attempts, s.route
	s.mu.Unlock()
	opened := s.opened.Load()
	if ep != nil {
		ep.Release()
		if opened {
			// What the RPC says about its endpoint, for outlier detection:
			// atomics only (balancer.Classify says which codes count).
			ep.Report(code)
		}
	}
	if m, al := s.p.metrics, s.al; m != nil && cl != nil || al != nil {
		elapsed := time.Since(s.start)
		addr := ""
		if ep != nil && opened {
			addr = ep.Address()
		}
		if m != nil && cl != nil {
			label := ""
			if rt != nil {
				label = rt.Label
			}
			m.RPCFinished(cl.Name(), label, addr, grpccode.Name(code), elapsed)
		}
		if al != nil {
			s.logAccess(al, rt, cl, addr, code, attempts, elapsed)
		}
	}
	dc := s.dc
	dc.w.mu.Lock()
	dc.removeLocked(s)
	dc.w.mu.Unlock()
}

// logAccess queues the stream's access log record: a copy into the log's
// buffer, no allocation, never a wait.
func (s *fstream) logAccess(al *accesslog.Logger, rt *route.Entry, cl *balancer.Cluster, endpoint string, code codes.Code, attempts int, elapsed time.Duration) {
	r := accesslog.Record{
		Kind:          accesslog.GRPC,
		Start:         s.start,
		Duration:      elapsed,
		Endpoint:      endpoint,
		Client:        s.dc.nc.RemoteAddr(),
		Method:        s.method,
		Authority:     s.authority,
		UserAgent:     s.agent,
		Status:        code,
		RequestBytes:  s.reqBytes.Load(),
		ResponseBytes: s.respBytes.Load(),
		Attempts:      attempts,
	}
	if rt != nil {
		r.Route = rt.Label // the name, else the index; "" for the default
	}
	if cl != nil {
		r.Cluster = cl.Name()
	}
	al.Log(&r)
}

// flusher collects the connections a reader goroutine wrote to, to flush
// them together when it has nothing more to read: one write syscall per
// batch. A nil flusher flushes at once.
type flusher struct {
	ws []*h2writer
}

// touchLocked is called with w.mu held after writing to w.
func (fl *flusher) touchLocked(w *h2writer) {
	if fl == nil {
		w.flushLocked()
		return
	}
	for _, x := range fl.ws {
		if x == w {
			return
		}
	}
	fl.ws = append(fl.ws, w)
}

func (fl *flusher) flushAll() {
	for i, w := range fl.ws {
		w.flush()
		fl.ws[i] = nil
	}
	fl.ws = fl.ws[:0]
}

// sendWith writes the credit and leaves the flush to fl.
func (c credit) sendWith(fl *flusher) {
	if c.ctr != nil {
		c.ctr.Add(c.n)
	}
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	if c.w.err == nil {
		c.w.note(c.w.fr.WriteWindowUpdate(c.id, uint32(c.n)))
		fl.touchLocked(c.w)
	}
}

func sendCredits(fl *flusher, credits []credit) {
	for _, c := range credits {
		if c.end != nil {
			c.end.finish(c.code)
			continue
		}
		c.sendWith(fl)
	}
}
