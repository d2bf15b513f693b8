package grpcproxy

import (
	"encoding/binary"
	"slices"
	"sync"

	"github.com/vigil-proxy/vigil/balancer"
)

// Transparent retry of streams a backend never processed.
//
// A backend that refuses a stream (RST_STREAM REFUSED_STREAM: its stream
// limit, a race with its SETTINGS) or leaves it above a GOAWAY's
// last-stream-id (a graceful stop, a maximum connection age) guarantees
// that it did nothing with it (RFC 9113 8.7), so the RPC can be sent again.
// A client whose gRPC stack does not retry such streams itself (C-core:
// Python, C++, Ruby, PHP) would otherwise see UNAVAILABLE for a call that
// never reached a backend. So the proxy keeps what the client sent of each
// stream until the backend's first response frame, up to maxReplay bytes
// per stream and maxReplayPerConn per client connection, and replays it on
// another endpoint, else on another connection to the same endpoint (a
// new one, as the old one is draining or full). Past those bounds, once the
// backend answered, or after maxReplays, the refusal passes to the client
// as it came.
const (
	maxReplay        = 64 << 10
	maxReplayPerConn = 1 << 20
	maxReplays       = 3
)

// The kept bytes of small requests live in pooled buffers: a unary RPC
// keeps its request without an allocation of its own.
const replayChunk = 4 << 10

var replayPool = sync.Pool{New: func() any {
	b := make([]byte, 0, replayChunk)
	return &b
}}

// Reasons of a replay, as Metrics.RPCReplayed reports them.
const (
	ReplayRefused = "refused_stream"
	ReplayGoAway  = "goaway"
)

// keepLocked adds request bytes (and the client's END_STREAM) to what a
// retry would replay. s.mu is held.
func (s *fstream) keepLocked(data []byte, end bool) {
	if s.replayOff {
		return
	}
	if n := len(data); n > 0 {
		if len(s.replay) == 0 && n >= 5 && 5+int64(binary.BigEndian.Uint32(data[1:5])) > maxReplay {
			// The request's first gRPC message alone is over the bound:
			// keep nothing rather than grow a buffer only to drop it.
			s.dropReplayLocked()
			return
		}
		if len(s.replay)+n > maxReplay {
			s.dropReplayLocked()
			return
		}
		if s.dc.replayBytes.Add(int64(n)) > maxReplayPerConn {
			s.dc.replayBytes.Add(-int64(n))
			s.dropReplayLocked()
			return
		}
		if s.replayBuf == nil {
			s.replayBuf = replayPool.Get().(*[]byte)
			s.replay = (*s.replayBuf)[:0]
		}
		s.replay = append(s.replay, data...)
	}
	s.replayEnd = s.replayEnd || end
}

// dropReplayLocked ends the stream's chance of a retry and gives its
// buffer back. s.mu is held.
func (s *fstream) dropReplayLocked() {
	s.replayOff = true
	if n := len(s.replay); n > 0 {
		s.dc.replayBytes.Add(-int64(n))
	}
	if s.replayBuf != nil {
		if cap(s.replay) <= maxReplay {
			*s.replayBuf = s.replay[:0]
			replayPool.Put(s.replayBuf)
		}
		s.replayBuf = nil
	}
	s.replay = nil
}

// backendAnswered: the backend sent the stream's first response frame, so
// it processed the stream: no retry from now on.
func (s *fstream) backendAnswered() {
	s.mu.Lock()
	if !s.replayOff {
		s.dropReplayLocked()
	}
	s.mu.Unlock()
}

// retry moves s, which uc's backend never processed, to another
// connection, sending again what the client sent so far. It reports false
// when it cannot (the backend answered already, the request outgrew the
// buffer, too many replays, the stream moved or ended): the caller then
// passes the refusal to the client.
func (s *fstream) retry(uc *upConn, reason string, fl *flusher) bool {
	s.mu.Lock()
	if s.uc != uc || s.finished || s.replayOff || s.replays >= maxReplays {
		s.mu.Unlock()
		return false
	}
	s.replays++
	uc.w.mu.Lock()
	// Closed on uc (refused, or ignored by a server going away): nothing
	// more is written there, not even a reset.
	s.req.done, s.req.closed = true, true
	s.req.buf = nil
	uc.w.mu.Unlock()
	uc.remove(s)
	// A copy: the new connection's half appends to what it was given.
	// Stream credit for the replayed bytes is owed once more by the new
	// half, which is right: none was sent yet, as maxReplay is below the
	// batch (streamWindow/4) credit is sent in.
	s.carry, s.carryEnd = slices.Clone(s.replay), s.replayEnd
	ep, cl := s.ep, s.cluster
	s.ep, s.uc = nil, nil
	s.mu.Unlock()
	ep.Release()
	if m := s.p.metrics; m != nil {
		m.RPCReplayed(cl.Name(), ep.Address(), reason)
	}
	// Another endpoint first: one that refuses or goes away may be
	// stopping, and a new connection to it would likely be refused too.
	// With no other, a new connection to the same endpoint (its maximum
	// connection age, a full connection).
	placed, lastErr := s.placeOther(nil, fl)
	if placed || s.placeOn(ep, fl) {
		return true
	}
	s.failUnplaced(lastErr, fl)
	return true
}

// placeOn puts s on a usable connection to ep (opening one if needed), with
// the request data carried so far; false when ep takes no new stream now.
func (s *fstream) placeOn(ep *balancer.Endpoint, fl *flusher) bool {
	if ep.Excluded() {
		return false
	}
	uc, err := s.p.upstream(ep)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished || s.uc != nil {
		return true
	}
	if !uc.add(s, s.carry, s.carryEnd, fl) {
		return false
	}
	s.carry = nil
	ep.Acquire()
	s.ep, s.uc = ep, uc
	return true
}
