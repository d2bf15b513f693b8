package probeconn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/internal/grpccode"
	"github.com/vigil-proxy/vigil/internal/h2wire"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
)

// readBufferSize is the read buffer of a connection: a Check's whole
// answer (HEADERS, DATA, trailers) is about 100 bytes and comes in with
// one read.
const readBufferSize = 2 << 10

// minMaxFrameSize is HTTP/2's initial SETTINGS_MAX_FRAME_SIZE.
const minMaxFrameSize = 16384

// transport is one HTTP/2 connection. Its reader goroutine handles every
// frame that comes in; writes are made by whoever has something to send,
// under wmu, one system call per batch of frames.
type transport struct {
	conn *Conn
	nc   net.Conn
	br   *bufio.Reader // fr's, peeked at for the server's first frame header
	fr   *http2.Framer

	wmu  sync.Mutex // guards the writing half of fr, wbuf, henc, hbuf
	wbuf bytes.Buffer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu          sync.Mutex
	streams     map[uint32]*stream
	nextID      uint32
	sendWindow  int64 // the connection's, granted by the server
	peerWindow  int64 // the server's initial window for each new stream
	windowGrown chan struct{}
	recvUnacked uint32 // bytes received on the connection since its last WINDOW_UPDATE
	goAway      bool
	goAwayCode  http2.ErrCode
	err         error // why the transport ended; nil while it works

	done chan struct{} // closed when the reader returns
}

func newTransport(c *Conn, nc net.Conn) *transport {
	t := &transport{
		conn:        c,
		nc:          nc,
		streams:     map[uint32]*stream{},
		nextID:      1,
		sendWindow:  65535,
		peerWindow:  65535,
		windowGrown: make(chan struct{}),
		done:        make(chan struct{}),
	}
	t.br = bufio.NewReaderSize(nc, readBufferSize)
	t.fr = http2.NewFramer(&t.wbuf, t.br)
	// Our SETTINGS leave SETTINGS_MAX_FRAME_SIZE at its minimum; a longer
	// frame is not HTTP/2 from this server (a peer speaking something
	// else tends to look like one), not a reason to read megabytes.
	t.fr.SetMaxReadFrameSize(minMaxFrameSize)
	t.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	t.fr.MaxHeaderListSize = c.opts.MaxHeaderList
	t.henc = hpack.NewEncoder(&t.hbuf)
	return t
}

// writePreface sends the client preface: the magic string, SETTINGS and
// the connection window, in one write.
func (t *transport) writePreface() error {
	return t.write(func(fr *http2.Framer) error {
		t.wbuf.WriteString(http2.ClientPreface)
		err := fr.WriteSettings(
			http2.Setting{ID: http2.SettingEnablePush, Val: 0},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: t.conn.opts.Window},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: t.conn.opts.MaxHeaderList},
		)
		if err != nil {
			return err
		}
		if extra := t.conn.opts.Window - minWindow; extra > 0 {
			return fr.WriteWindowUpdate(0, extra)
		}
		return nil
	})
}

// write runs fn, which writes frames with t.fr into t.wbuf, and sends them
// in one write. A failed write ends the transport.
func (t *transport) write(fn func(*http2.Framer) error) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.writeLocked(fn)
}

func (t *transport) writeLocked(fn func(*http2.Framer) error) error {
	defer t.wbuf.Reset()
	if err := fn(t.fr); err != nil {
		return err
	}
	if _, err := t.nc.Write(t.wbuf.Bytes()); err != nil {
		err = fmt.Errorf("write: %w", err)
		t.close(connectionError(err))
		return err
	}
	return nil
}

// close ends the transport: every call on it fails with reason, and the
// socket is closed, which makes the reader return.
func (t *transport) close(reason error) {
	t.conn.retire(t, connectivity.TransientFailure)
	t.mu.Lock()
	streams := t.fail(reason)
	t.mu.Unlock()
	for _, s := range streams {
		s.wake()
	}
	_ = t.nc.Close()
}

// fail records reason as the transport's end and ends every stream with
// it, returning them to be woken; t.mu must be held.
func (t *transport) fail(reason error) []*stream {
	if t.err != nil {
		return nil
	}
	t.err = reason
	ended := make([]*stream, 0, len(t.streams))
	for id, s := range t.streams {
		s.endLocked(reason)
		delete(t.streams, id)
		ended = append(ended, s)
	}
	t.signalWindowLocked()
	return ended
}

// readLoop handles the frames of the connection until it fails or is
// closed.
func (t *transport) readLoop() {
	defer t.conn.exited(t)
	defer close(t.done)
	for first := true; ; first = false {
		// The next frame's header, peeked: the type of a frame the
		// Framer rejects names it in the error. The server's first frame
		// must be its preface, a SETTINGS frame (RFC 9113 3.4): its header
		// alone tells a peer that does not speak HTTP/2 (an HTTP/1
		// answer, TLS, garbage), judged as grpcproxy judges its backends,
		// before waiting for a payload that may never come.
		hdr, err := t.br.Peek(h2wire.FrameHeaderLen)
		if err == nil && first {
			err = h2wire.CheckServerPreface(hdr, minMaxFrameSize)
		}
		if err != nil {
			if first && len(hdr) == 0 && (errors.Is(err, io.EOF) || isSocketError(err)) {
				err = fmt.Errorf("%w: %w", ErrNoPreface, err)
			}
			t.readFailed(err, first)
			return
		}
		typ := http2.FrameType(hdr[3])
		f, err := t.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if !first && errors.As(err, &se) {
				t.resetStream(se.StreamID, se.Code, newError(KindReset, codes.Internal, se, "transport: %v", se))
				continue
			}
			if ce, ok := h2wire.FramerError(err, typ, t.fr.ErrorDetail()); ok {
				t.protocolError(ce)
				return
			}
			t.readFailed(err, first)
			return
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			t.onHeaders(f)
		case *http2.DataFrame:
			t.onData(f)
		case *http2.RSTStreamFrame:
			t.onReset(f)
		case *http2.SettingsFrame:
			if err := t.onSettings(f); err != nil {
				t.protocolError(err)
				return
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				_ = t.write(func(fr *http2.Framer) error { return fr.WritePing(true, data) })
			}
		case *http2.GoAwayFrame:
			t.onGoAway(f)
		case *http2.WindowUpdateFrame:
			t.onWindowUpdate(f)
		case *http2.PushPromiseFrame:
			// Push is disabled in our SETTINGS: a server that pushes
			// breaks the protocol (RFC 9113 8.4).
			t.protocolError(&h2wire.ConnError{Code: http2.ErrCodeProtocol, Reason: "server sent PUSH_PROMISE, which the client disabled"})
			return
		}
	}
}

// readFailed ends the transport after a read error: the server closed
// the connection, the kernel gave up on it (ETIMEDOUT), or it spoke
// something else than HTTP/2. first says the error came instead of the
// server's preface.
func (t *transport) readFailed(err error, first bool) {
	t.conn.retire(t, connectivity.TransientFailure)
	t.mu.Lock()
	var reason error
	switch {
	case t.err != nil:
	case t.goAway:
		// Worded as grpc-go words it.
		kind := KindDrained
		if t.goAwayCode != http2.ErrCodeNo {
			kind = KindGoAway
		}
		reason = newError(kind, codes.Unavailable, err, "closing transport due to: %v, received prior goaway: code: %v", err, t.goAwayCode)
	case first && errors.Is(err, ErrNoPreface):
		reason = connectionError(err)
	case first && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isSocketError(err):
		// Bytes came, and they were no HTTP/2 server preface: an HTTP/1
		// server, a TLS server, something else.
		reason = newError(KindNotGRPC, codes.Unavailable, err, "connection error: transport: read: %v", err)
	default:
		reason = connectionError(fmt.Errorf("read: %w", err))
	}
	var streams []*stream
	if reason != nil {
		streams = t.fail(reason)
	}
	t.mu.Unlock()
	for _, s := range streams {
		s.wake()
	}
	_ = t.nc.Close()
}

func (t *transport) onHeaders(f *http2.MetaHeadersFrame) {
	t.mu.Lock()
	s := t.streams[f.StreamID]
	if s == nil {
		t.mu.Unlock()
		return
	}
	rst := s.headersLocked(f)
	done := s.ended
	if done {
		t.removeLocked(s)
	}
	t.mu.Unlock()
	if rst {
		t.writeReset(s.id, http2.ErrCodeCancel)
	}
	s.wake()
	if done {
		t.closeIfDrained()
	}
}

func (t *transport) onData(f *http2.DataFrame) {
	n := f.Length
	t.mu.Lock()
	var connUpdate, streamUpdate uint32
	t.recvUnacked += n
	if t.recvUnacked >= minWindow/4 {
		connUpdate, t.recvUnacked = t.recvUnacked, 0
	}
	s := t.streams[f.StreamID]
	var rst, ended bool
	if s != nil {
		rst = s.dataLocked(f.Data(), f.StreamEnded())
		if ended = s.ended; ended {
			t.removeLocked(s)
		} else {
			// The stream's window reopens as the caller consumes
			// messages (RecvMsg), so that a caller slower than the
			// server holds at most one window of them; padding is
			// consumed on arrival.
			streamUpdate = s.creditLocked(n - uint32(len(f.Data())))
		}
	}
	t.mu.Unlock()
	if connUpdate > 0 || streamUpdate > 0 {
		_ = t.write(func(fr *http2.Framer) error {
			if connUpdate > 0 {
				if err := fr.WriteWindowUpdate(0, connUpdate); err != nil {
					return err
				}
			}
			if streamUpdate > 0 {
				return fr.WriteWindowUpdate(f.StreamID, streamUpdate)
			}
			return nil
		})
	}
	if s != nil {
		if rst {
			t.writeReset(s.id, http2.ErrCodeCancel)
		}
		s.wake()
		if ended {
			t.closeIfDrained()
		}
	}
}

func (t *transport) onReset(f *http2.RSTStreamFrame) {
	err := resetError(f.ErrCode)
	t.mu.Lock()
	s := t.streams[f.StreamID]
	t.mu.Unlock()
	if s != nil && f.ErrCode == http2.ErrCodeCancel {
		// A grpc-go server cancels a call whose grpc-timeout ran out, at
		// about the same moment as the client's own deadline: when ours
		// has passed, that was the cause (grpc-go's client reads it so).
		if d, ok := s.ctx.Deadline(); ok && !d.After(time.Now()) {
			err = newError(KindTimeout, codes.DeadlineExceeded, nil, "%s", err.Status.Message())
		}
	}
	t.resetStream(f.StreamID, 0, err)
}

// resetStream ends stream id with err; a non-zero code is sent to the
// server in RST_STREAM.
func (t *transport) resetStream(id uint32, code http2.ErrCode, err *Error) {
	t.mu.Lock()
	s := t.streams[id]
	if s != nil {
		s.endLocked(err)
		t.removeLocked(s)
	}
	t.mu.Unlock()
	if code != 0 {
		t.writeReset(id, code)
	}
	if s != nil {
		s.wake()
		t.closeIfDrained()
	}
}

func (t *transport) writeReset(id uint32, code http2.ErrCode) {
	_ = t.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// onSettings validates the server's SETTINGS (RFC 9113 6.5.2) and, only
// if every value is allowed, applies and acks them. An invalid frame is
// an *h2wire.ConnError, which ends the connection: applied, a window over
// 2^31-1 or a frame size out of range would make every later window and
// frame computation wrong.
func (t *transport) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	if err := h2wire.CheckSettings(f, true); err != nil {
		return err
	}
	t.mu.Lock()
	var tableSize uint32
	haveTableSize := false
	var windowDelta int64
	haveWindow := false
	_ = f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			// Several in one frame: the last one is the value, the delta
			// is from the window before the frame.
			windowDelta = int64(s.Val) - t.peerWindow
			haveWindow = true
		case http2.SettingHeaderTableSize:
			tableSize, haveTableSize = s.Val, true
		}
		return nil
	})
	if haveWindow {
		// The change applies to every open stream's window, which must
		// stay within 2^31-1 (RFC 9113 6.9.2); h2wire leaves this to the
		// engines, which hold the windows.
		for _, st := range t.streams {
			if st.sendWindow+windowDelta > maxWindow {
				t.mu.Unlock()
				return &h2wire.ConnError{Code: http2.ErrCodeFlowControl, Reason: "SETTINGS_INITIAL_WINDOW_SIZE takes a stream window over 2^31-1"}
			}
		}
		t.peerWindow += windowDelta
		for _, st := range t.streams {
			st.sendWindow += windowDelta
		}
	}
	t.signalWindowLocked()
	t.mu.Unlock()
	_ = t.write(func(fr *http2.Framer) error {
		if haveTableSize {
			t.henc.SetMaxDynamicTableSizeLimit(tableSize)
		}
		return fr.WriteSettingsAck()
	})
	return nil
}

// protocolError ends the transport because the server broke HTTP/2 (err
// an *h2wire.ConnError): the calls on it fail as KindBroken, UNAVAILABLE,
// wrapping err, and the server is told why in a GOAWAY with err's code
// (RFC 9113 5.4.1), so that its logs name the fault too.
func (t *transport) protocolError(err error) {
	code := http2.ErrCodeProtocol
	var ce *h2wire.ConnError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	reason := newError(KindBroken, codes.Unavailable, err, "connection error: transport: the backend broke HTTP/2: %v", err)
	t.conn.retire(t, connectivity.TransientFailure)
	t.mu.Lock()
	streams := t.fail(reason)
	t.mu.Unlock()
	// No server-initiated stream was ever processed: last stream ID 0.
	_ = t.write(func(fr *http2.Framer) error { return fr.WriteGoAway(0, code, nil) })
	for _, s := range streams {
		s.wake()
	}
	_ = t.nc.Close()
}

func (t *transport) onWindowUpdate(f *http2.WindowUpdateFrame) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.StreamID == 0 {
		t.sendWindow += int64(f.Increment)
	} else if s := t.streams[f.StreamID]; s != nil {
		s.sendWindow += int64(f.Increment)
	}
	t.signalWindowLocked()
}

// onGoAway stops new calls on the transport. Calls the server will not
// process (stream IDs above its last) fail as drained, which CheckOnce
// retries on a new connection; the others finish here, and the
// connection closes when the last one has.
func (t *transport) onGoAway(f *http2.GoAwayFrame) {
	next := connectivity.Idle
	if f.ErrCode != http2.ErrCodeNo {
		next = connectivity.TransientFailure
	}
	t.conn.retire(t, next)
	t.mu.Lock()
	t.goAway = true
	t.goAwayCode = f.ErrCode
	var refused []*stream
	for id, s := range t.streams {
		if id > f.LastStreamID {
			refused = append(refused, s)
		}
	}
	for _, s := range refused {
		if f.ErrCode == http2.ErrCodeNo {
			s.endLocked(errDrained)
		} else {
			s.endLocked(newError(KindGoAway, codes.Unavailable, nil, "received goaway: code: %v, debug data: %q", f.ErrCode, f.DebugData()))
		}
		t.removeLocked(s)
	}
	t.mu.Unlock()
	for _, s := range refused {
		s.wake()
	}
	t.closeIfDrained()
}

// closeIfDrained closes the transport once it has received GOAWAY and no
// call is left on it.
func (t *transport) closeIfDrained() {
	t.mu.Lock()
	drained := t.goAway && len(t.streams) == 0 && t.err == nil
	t.mu.Unlock()
	if drained {
		t.close(errDrained)
	}
}

// removeLocked forgets s; t.mu must be held.
func (t *transport) removeLocked(s *stream) {
	if t.streams[s.id] == s {
		delete(t.streams, s.id)
	}
}

// signalWindowLocked wakes the calls waiting for flow-control window (or
// for the transport's end); t.mu must be held.
func (t *transport) signalWindowLocked() {
	close(t.windowGrown)
	t.windowGrown = make(chan struct{})
}

// resetError is the error of a call the server reset, with grpc-go's code
// and wording.
func resetError(code http2.ErrCode) *Error {
	return newError(KindReset, grpccode.FromReset(code), nil, "stream terminated by RST_STREAM with error code: %v", code)
}

// isSocketError reports whether err came from the socket itself (reset,
// timed out, closed) rather than from what was read.
func isSocketError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) || errors.Is(err, net.ErrClosed)
}
