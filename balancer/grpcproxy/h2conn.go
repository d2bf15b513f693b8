package grpcproxy

import (
	"bufio"
	"errors"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/vigil-proxy/vigil/internal/h2wire"
)

// HTTP/2 parameters of the frame engine.
const (
	// streamWindow is the per-stream receive window the proxy advertises
	// on both sides. Data is only acknowledged (stream WINDOW_UPDATE) once
	// it has been forwarded, so it bounds what one stream can make the
	// proxy buffer in each direction.
	streamWindow = 1 << 20
	// connWindow is the connection-level receive window. Connection credit
	// is returned on receipt: the stream windows bound the buffering.
	connWindow = 1 << 26
	// maxHeaderListSize bounds one decoded header list (request headers,
	// response headers or trailers).
	maxHeaderListSize = 1 << 20
	// defaultMaxFrame is HTTP/2's initial SETTINGS_MAX_FRAME_SIZE, and the
	// largest frame the proxy reads from either side (it never advertises
	// more): a peer's larger frame is a FRAME_SIZE_ERROR, not a buffer of
	// up to 16 MiB.
	defaultMaxFrame = 16 << 10
	// maxWindow is the largest flow-control window HTTP/2 allows.
	maxWindow = 1<<31 - 1
	// bufSize is the read and write buffer of each connection.
	bufSize = 64 << 10
)

// maxPending bounds the bytes queued for a client connection's writer
// goroutine: DATA for the client waits (as for flow-control window) beyond
// it, so a client that stops reading costs bounded memory and never blocks
// the goroutines that forward to it.
const maxPending = 1 << 20

// h2writer is the write side of one HTTP/2 connection, shared by every
// goroutine that forwards frames to it. mu guards all fields and the send
// state (window, pending data) of every stream half writing to it.
//
// Backend connections are written synchronously by whoever forwards (one
// write syscall per batch). Client connections are untrusted: frames are
// queued in out and written by the connection's own writer goroutine, so a
// client that stops reading blocks nobody else.
type h2writer struct {
	nc   net.Conn
	io   *rawIO      // reads and writes nc
	sw   stallWriter // writes to io, with a write deadline
	mu   sync.Mutex
	bw   *bufio.Writer // synchronous mode, over sw
	fr   *http2.Framer
	henc *h2wire.Encoder
	hbuf []byte // a header block being written

	async bool          // client connection: out and wake are used
	out   []byte        // frames queued for the writer goroutine
	spare []byte        // the writer's previous buffer, reused
	wake  chan struct{} // signals the writer goroutine
	// writing: the writer goroutine is writing (nobody else may).
	writing bool
	// closing: close the connection once the queue is written.
	closing bool

	sendWin  int64  // connection-level send window granted by the peer
	initWin  int64  // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame uint32 // the peer's SETTINGS_MAX_FRAME_SIZE
	blocked  []*half
	halves   halfList  // halves writing here, for SETTINGS changes
	dirty    bool      // frames written since the last flush
	clock    *ackClock // acks the PINGs held in heldAcks
	heldAcks [][8]byte
	err      error // the first write error: the connection is dead
	owed     int64 // connection credit owed to the peer
	recvd    int64 // DATA bytes received from the peer
	credited int64 // connection window granted to the peer beyond the initial one

	// active counts the streams the peer counts toward our
	// SETTINGS_MAX_CONCURRENT_STREAMS (client connections): a stream stops
	// counting in the critical section that queues its END_STREAM or
	// RST_STREAM, as the peer stops counting it when it reads that frame.
	active int
	// resets remembers the last streams reset here while the peer could
	// still send on them: what it sent before it read the reset is
	// ignored (RFC 9113 5.1), not answered with another reset.
	resets    [32]uint32
	resetNext int
}

// sentResetLocked records that stream id was reset by us.
func (w *h2writer) sentResetLocked(id uint32) {
	w.resets[w.resetNext] = id
	w.resetNext = (w.resetNext + 1) % len(w.resets)
}

// resetByUsLocked tells whether we recently reset stream id.
func (w *h2writer) resetByUsLocked(id uint32) bool {
	for _, r := range w.resets {
		if r == id {
			return true
		}
	}
	return false
}

func newWriter(nc net.Conn, stallTimeout time.Duration, clock *ackClock) *h2writer {
	w := &h2writer{
		clock:    clock,
		sw:       stallWriter{timeout: stallTimeout},
		sendWin:  65535,
		initWin:  65535,
		maxFrame: defaultMaxFrame,
	}
	w.henc = h2wire.NewEncoder()
	if nc != nil {
		w.setConnLocked(nc)
	}
	return w
}

// newSyncWriter returns the writer of a backend connection, whose
// connection is set later (setConn).
func newSyncWriter(clock *ackClock) *h2writer {
	w := newWriter(nil, upWriteTimeout, clock)
	w.bw = bufio.NewWriterSize(&w.sw, bufSize)
	w.fr = http2.NewFramer(w.bw, nil)
	return w
}

// setConnLocked gives a backend connection's writer its connection.
func (w *h2writer) setConnLocked(nc net.Conn) {
	w.nc = nc
	w.io = newRawIO(nc)
	w.sw.c = w.io
}

// newAsyncWriter returns the writer of a client connection; run must
// drain it.
func newAsyncWriter(nc net.Conn, clock *ackClock) *h2writer {
	w := newWriter(nc, clientWriteTimeout, clock)
	w.async = true
	w.wake = make(chan struct{}, 1)
	w.fr = http2.NewFramer(queueWriter{w}, nil)
	return w
}

// Write timeouts: a peer that takes no byte for that long is gone or
// stuck, and a write blocked on it must not hold the goroutines (and
// locks) that forward to it for ever. Flow control keeps a healthy peer's
// socket from filling: a write only blocks when the peer granted window
// and stopped reading. Variables for tests.
var (
	// upWriteTimeout bounds writes to a backend connection, made under
	// its lock by the goroutines forwarding to it: a backend that froze
	// with window granted fails its connection instead of stalling the
	// client connections whose streams go to it.
	upWriteTimeout = 10 * time.Second
	// clientWriteTimeout bounds the writes of a client connection's
	// writer goroutine: a client that stops reading with window granted
	// is dropped (its queue is bounded meanwhile).
	clientWriteTimeout = 30 * time.Second
)

// stallWriter writes to a connection and fails a write that makes no
// progress for about timeout (at least half of it). The write deadline is
// moved forward only once half of it has passed, not on every write:
// setting one is cheap but not free, and writes are per RPC.
type stallWriter struct {
	c        *rawIO
	timeout  time.Duration
	deadline time.Time
}

// stallChunk is the most written per deadline check, so that a large
// write to a slow reader is judged by its progress, not its total.
const stallChunk = 256 << 10

func (sw *stallWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		chunk := b[:min(len(b), stallChunk)]
		if now := time.Now(); sw.deadline.Sub(now) < sw.timeout/2 {
			sw.deadline = now.Add(sw.timeout)
			if err := sw.c.nc.SetWriteDeadline(sw.deadline); err != nil {
				return written, err
			}
		}
		n, err := sw.c.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// queueWriter appends frames to the writer's queue (w.mu is held).
type queueWriter struct{ w *h2writer }

func (q queueWriter) Write(b []byte) (int, error) {
	if len(q.w.out)+len(b) > maxQueued {
		// Control frames (PING and SETTINGS acks, resets) pile up only if
		// the client sends them without reading ours: drop it.
		return 0, errQueueFull
	}
	q.w.out = append(q.w.out, b...)
	return len(b), nil
}

// maxQueued bounds a client connection's queue, control frames included.
const maxQueued = 4 * maxPending

var errQueueFull = errors.New("client is not reading: write queue full")

// room is how many more DATA bytes the connection takes now.
func (w *h2writer) room() int64 {
	if !w.async {
		return math.MaxInt64
	}
	return int64(maxPending - len(w.out))
}

// flushLocked writes buffered frames to the connection (or hands them to
// the writer goroutine).
func (w *h2writer) flushLocked() {
	if !w.dirty || w.err != nil {
		return
	}
	w.dirty = false
	if w.async {
		if !w.writing && len(w.out) > 0 {
			// Write what the socket takes now, here: handing every batch
			// to the writer goroutine costs a wake-up (futex, scheduler)
			// per batch, the largest part of a small RPC's cost. The
			// goroutine takes what the client does not read at once.
			n, err := w.io.TryWrite(w.out)
			w.out = w.out[:copy(w.out, w.out[n:])]
			if err != nil {
				w.err = err
				_ = w.nc.Close()
			}
		}
		if len(w.out) > 0 || len(w.blocked) > 0 || w.closing || w.err != nil {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
		return
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
		_ = w.nc.Close()
	}
}

func (w *h2writer) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
}

// runWriter writes a client connection's queued frames until the
// connection closes. Halves waiting for room are drained after each write;
// the credits they owe are sent. Once closing is set and the queue is
// written, it closes the connection; when done is closed it writes what is
// left (briefly: the client may not be reading) and closes it.
func (w *h2writer) runWriter(done <-chan struct{}) {
	defer func() { _ = w.nc.Close() }()
	for {
		final := false
		select {
		case <-w.wake:
		case <-done:
			final = true
			_ = w.nc.SetWriteDeadline(time.Now().Add(time.Second))
		}
		w.mu.Lock()
		buf := w.out
		w.out = w.spare[:0]
		w.writing = true
		w.mu.Unlock()
		if len(buf) > 0 {
			var err error
			if final {
				_, err = w.io.Write(buf)
			} else {
				_, err = w.sw.Write(buf)
			}
			if err != nil {
				w.mu.Lock()
				if w.err == nil {
					w.err = err
				}
				w.mu.Unlock()
				return
			}
		}
		if final {
			return
		}
		w.mu.Lock()
		w.writing = false
		w.spare = buf[:0]
		var credits []credit
		if len(w.blocked) > 0 {
			credits = w.drainBlockedLocked(nil)
			if len(w.out) > 0 {
				w.dirty = true
				w.flushLocked()
			}
		}
		closeNow := w.closing && len(w.out) == 0
		w.mu.Unlock()
		sendCredits(nil, credits)
		if closeNow {
			return
		}
	}
}

// note records a frame write error.
func (w *h2writer) note(err error) {
	w.dirty = true
	if err != nil && w.err == nil {
		w.err = err
		_ = w.nc.Close()
	}
}

// writeHeadersLocked encodes fields with this connection's HPACK state
// and writes them as HEADERS (+ CONTINUATION) on stream id.
func (w *h2writer) writeHeadersLocked(id uint32, fields []hpack.HeaderField, endStream bool) {
	w.hbuf = w.henc.AppendBlock(w.hbuf[:0], fields)
	block := w.hbuf
	first := true
	for first || len(block) > 0 {
		n := min(len(block), int(w.maxFrame))
		chunk, rest := block[:n], block[n:]
		if first {
			w.note(w.fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID: id, BlockFragment: chunk, EndStream: endStream, EndHeaders: len(rest) == 0,
			}))
			first = false
		} else {
			w.note(w.fr.WriteContinuation(id, len(rest) == 0, chunk))
		}
		block = rest
	}
}

// receivedLocked accounts n bytes of DATA received from the peer and owes
// them back as connection window, sent in batches to save frames. It
// reports false when the peer sent more than its window allowed.
func (w *h2writer) receivedLocked(n int64) bool {
	w.recvd += n
	if w.recvd > w.credited+connWindow {
		return false
	}
	w.owed += n
	if w.owed >= connWindow/4 {
		w.note(w.fr.WriteWindowUpdate(0, uint32(w.owed)))
		w.credited += w.owed
		w.owed = 0
	}
	return true
}

// half is one direction of a forwarded stream: what is written to dst.
// dst.mu guards it.
type half struct {
	dst      *h2writer
	id       uint32 // the stream's id on dst; 0 until opened there
	win      int64  // stream-level send window on dst
	buf      []byte // data waiting for window (or for the stream to open)
	end      bool   // END_STREAM once buf is written
	trailers []hpack.HeaderField
	queued   bool // in dst.blocked
	done     bool // no more data: END_STREAM or RST_STREAM written, or abandoned
	// closed: the stream is closed on dst, not even RST_STREAM is due (it
	// was written, or the peer ended the stream). A request half that sent
	// END_STREAM still gets an RST_STREAM when the client cancels.
	closed bool
	toPeer bool // a response half: END_STREAM to the client closes it
	// counted: the stream counts in dst.active (a response half).
	counted bool
	// peerEnded: the client sent END_STREAM (a response half), so our
	// END_STREAM closes the stream on both sides.
	peerEnded bool
	// src and srcID receive stream credit for the bytes written;
	// credited counts it, for the source's flow-control check.
	src      *h2writer
	srcID    uint32
	owed     int64 // stream credit owed to src
	credited *atomic.Int64
	// endStream is finished with endCode once the half is done: set when
	// the backend ended while data for the client still waits for window.
	endStream *fstream
	endCode   codes.Code
	// prev, next and listed place the half in dst.halves.
	prev, next *half
	listed     bool
}

// halfList is a writer's halves, linked through the halves themselves: a
// stream joins and leaves two of them per RPC, without a map's hashing.
type halfList struct{ head *half }

func (l *halfList) add(h *half) {
	if h.listed {
		return
	}
	h.prev, h.next, h.listed = nil, l.head, true
	if l.head != nil {
		l.head.prev = h
	}
	l.head = h
}

func (l *halfList) remove(h *half) {
	if !h.listed {
		return
	}
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		l.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	}
	h.prev, h.next, h.listed = nil, nil, false
}

// sendLocked writes as much of data (then buf) as dst's windows allow and
// keeps the rest. It returns the bytes written, whose stream credit the
// caller owes the source.
func (h *half) sendLocked(data []byte, end bool) int64 {
	if h.done {
		return 0
	}
	if len(h.buf) > 0 || h.id == 0 {
		h.buf = append(h.buf, data...)
		h.end = h.end || end
		return h.drainLocked()
	}
	n := h.writeLocked(data, end)
	if n < int64(len(data)) {
		h.buf = append(h.buf, data[n:]...)
		h.end = h.end || end
		h.blockLocked()
	}
	return n
}

// writeLocked writes the prefix of data that the windows allow, with
// END_STREAM when all of it went and end is set.
func (h *half) writeLocked(data []byte, end bool) int64 {
	w := h.dst
	var sent int64
	for {
		n := min(int64(len(data)), h.win, w.sendWin, int64(w.maxFrame), w.room())
		if n < 0 {
			n = 0
		}
		last := end && n == int64(len(data))
		if n == 0 && !last {
			return sent
		}
		w.note(w.fr.WriteData(h.id, last, data[:n]))
		h.win -= n
		w.sendWin -= n
		sent += n
		data = data[n:]
		if last {
			h.endLocked()
			return sent
		}
		if len(data) == 0 {
			return sent
		}
	}
}

// drainLocked writes what the windows now allow of buf, then END_STREAM or
// the trailers. It returns the data bytes written.
func (h *half) drainLocked() int64 {
	if h.done || h.id == 0 {
		return 0
	}
	end := h.end && h.trailers == nil
	n := h.writeLocked(h.buf, end)
	h.buf = h.buf[n:]
	if len(h.buf) == 0 {
		h.buf = nil
		if h.trailers != nil && !h.done {
			h.dst.writeHeadersLocked(h.id, h.trailers, true)
			h.endLocked()
		}
	}
	if !h.done && (len(h.buf) > 0 || (h.end && h.trailers == nil)) {
		h.blockLocked()
	}
	return n
}

func (h *half) blockLocked() {
	if !h.queued {
		h.queued = true
		h.dst.blocked = append(h.dst.blocked, h)
	}
}

// trailersLocked ends the half with trailers, after any pending data.
func (h *half) trailersLocked(fields []hpack.HeaderField) {
	if h.done {
		return
	}
	if len(h.buf) > 0 || h.id == 0 {
		// Kept beyond the frame they came in, whose list is reused.
		h.trailers = slices.Clone(fields)
		h.end = true
		return
	}
	h.dst.writeHeadersLocked(h.id, fields, true)
	h.endLocked()
}

// endLocked marks the half done once its END_STREAM is queued. A response
// half stops counting toward the client's stream limit here, in the
// critical section that queued the END_STREAM; and a client that has not
// ended its request is told with RST_STREAM NO_ERROR that it need not
// (RFC 9113 8.1.1), so that the stream is closed on both sides, as the
// count says (grpc-go servers do the same).
func (h *half) endLocked() {
	h.done = true
	h.trailers = nil
	if !h.toPeer {
		return
	}
	h.uncountLocked()
	if !h.peerEnded && !h.closed && h.id != 0 {
		h.closed = true
		h.dst.note(h.dst.fr.WriteRSTStream(h.id, http2.ErrCodeNo))
		h.dst.sentResetLocked(h.id)
	}
}

// uncountLocked takes the stream out of dst's count of active streams.
func (h *half) uncountLocked() {
	if h.counted {
		h.counted = false
		h.dst.active--
	}
}

// resetLocked abandons the half, with RST_STREAM code if it is open.
func (h *half) resetLocked(code http2.ErrCode) {
	if h.toPeer {
		h.uncountLocked()
	}
	if h.closed || (h.toPeer && h.done) {
		h.done = true
		return
	}
	h.done, h.closed = true, true
	h.buf, h.trailers = nil, nil
	if h.id != 0 {
		h.dst.note(h.dst.fr.WriteRSTStream(h.id, code))
		if h.toPeer && !h.peerEnded {
			h.dst.sentResetLocked(h.id)
		}
	}
}

// credit is stream credit owed to a source connection, sent after dst's
// lock is released (two connection locks are never held together); or,
// with end set, a stream to finish once that lock is released.
type credit struct {
	w    *h2writer
	id   uint32
	n    int64
	ctr  *atomic.Int64
	end  *fstream
	code codes.Code
}

// owedLocked accumulates n bytes of stream credit for the source and
// returns a credit to send when enough is owed.
func (h *half) owedLocked(n int64) (credit, bool) {
	if n <= 0 || h.src == nil {
		return credit{}, false
	}
	h.owed += n
	if h.owed < streamWindow/4 {
		return credit{}, false
	}
	c := credit{w: h.src, id: h.srcID, n: h.owed, ctr: h.credited}
	h.owed = 0
	return c, true
}

// windowUpdateLocked applies a WINDOW_UPDATE from the peer and drains the
// halves it unblocks; it returns the stream credits they owe. It reports
// false, changing nothing, when the increment would take the window over
// 2^31-1 (RFC 9113 6.9.1: FLOW_CONTROL_ERROR, for the stream or, on stream
// 0, the connection).
func (w *h2writer) windowUpdateLocked(streamHalf *half, incr int64, credits []credit) ([]credit, bool) {
	if streamHalf != nil {
		if streamHalf.win+incr > maxWindow {
			return credits, false
		}
		streamHalf.win += incr
	} else {
		if w.sendWin+incr > maxWindow {
			return credits, false
		}
		w.sendWin += incr
	}
	return w.drainBlockedLocked(credits), true
}

func (w *h2writer) drainBlockedLocked(credits []credit) []credit {
	blocked := w.blocked
	w.blocked = nil
	for _, h := range blocked {
		h.queued = false
		if c, ok := h.owedLocked(h.drainLocked()); ok {
			credits = append(credits, c)
		}
		if h.done && h.endStream != nil {
			credits = append(credits, credit{end: h.endStream, code: h.endCode})
			h.endStream = nil
		}
	}
	return credits
}

// connError is a connection error found in what a peer sent: the
// connection ends with a GOAWAY carrying code (RFC 9113 5.4.1).
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return e.code.String() + ": " + e.reason }

// asConnError is err as a connError: PROTOCOL_ERROR unless it is one, or
// one of x/net's.
func asConnError(err error) connError {
	var ce connError
	if errors.As(err, &ce) {
		return ce
	}
	var we *h2wire.ConnError
	if errors.As(err, &we) {
		return connError{we.Code, we.Reason}
	}
	var xe http2.ConnectionError
	if errors.As(err, &xe) {
		return connError{code: http2.ErrCode(xe)}
	}
	return connError{http2.ErrCodeProtocol, err.Error()}
}

// settingsLocked validates the peer's SETTINGS (RFC 9113 6.5.2), applies
// them and acks them. fromServer tells that the peer is a backend, which
// must not enable server push. An invalid value is a connError and nothing
// of the frame is applied.
func (w *h2writer) settingsLocked(f *http2.SettingsFrame, fromServer bool, credits []credit) ([]credit, error) {
	if err := h2wire.CheckSettings(f, fromServer); err != nil {
		return credits, err
	}
	// A change of SETTINGS_INITIAL_WINDOW_SIZE applies to every open
	// stream's window, which must stay within 2^31-1 (RFC 9113 6.9.2).
	initWin := w.initWin
	err := f.ForeachSetting(func(s http2.Setting) error {
		if s.ID != http2.SettingInitialWindowSize {
			return nil
		}
		delta := int64(s.Val) - initWin
		initWin = int64(s.Val)
		if delta > 0 {
			for h := w.halves.head; h != nil; h = h.next {
				if h.win+delta > maxWindow {
					return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE takes a stream window over 2^31-1"}
				}
			}
		}
		return nil
	})
	if err != nil {
		return credits, err
	}
	_ = f.ForeachSetting(func(s http2.Setting) error {
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - w.initWin
			w.initWin = int64(s.Val)
			for h := w.halves.head; h != nil; h = h.next {
				h.win += delta
			}
		case http2.SettingMaxFrameSize:
			w.maxFrame = s.Val
		case http2.SettingHeaderTableSize:
			w.henc.SetMaxDynamicTableSizeLimit(s.Val)
		}
		return nil
	})
	w.note(w.fr.WriteSettingsAck())
	return w.drainBlockedLocked(credits), nil
}
