package probeconn

import (
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vigil-proxy/vigil/internal/h2wire"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// stream is one call. Its fields after the constructor's are guarded by
// its transport's mu once it has one.
type stream struct {
	ctx    context.Context
	conn   *Conn
	method string
	stop   func() bool // unregisters the context.AfterFunc
	notify chan struct{}

	request  []byte // framed request, until sent
	tp       atomic.Pointer[transport]
	t        *transport // tp's value, for the goroutine that makes the call
	id       uint32
	started  bool // HEADERS sent
	halfDone bool // END_STREAM sent

	sendWindow  int64
	recvUnacked uint32 // bytes consumed since the stream's last WINDOW_UPDATE
	buf         []byte // received message bytes not yet consumed
	gotHeaders  bool
	header      metadata.MD
	trailer     metadata.MD
	ended       bool
	// final is how the call ended: nil for OK, else an *Error.
	final error
}

func newStream(ctx context.Context, c *Conn, method string) *stream {
	s := &stream{ctx: ctx, conn: c, method: method, notify: make(chan struct{}, 1)}
	s.stop = context.AfterFunc(ctx, s.cancel)
	return s
}

// cancel ends the call because its context ended, and resets it on the
// wire if it was started.
func (s *stream) cancel() {
	t := s.tp.Load()
	if t == nil {
		// Not started: start sees the context's end.
		s.wake()
		return
	}
	t.mu.Lock()
	wasLive := !s.ended && s.started
	if !s.ended {
		s.endLocked(contextError(s.ctx.Err()))
		t.removeLocked(s)
	}
	t.mu.Unlock()
	if wasLive {
		t.writeReset(s.id, http2.ErrCodeCancel)
	}
	s.wake()
	t.closeIfDrained()
}

func (s *stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// endLocked ends the call with err (nil: OK) unless it has ended
// already; the transport's mu must be held.
func (s *stream) endLocked(err error) {
	if s.ended {
		return
	}
	s.ended = true
	s.final = err
	s.stop()
}

// SendMsg frames m; it goes out with the call's HEADERS on CloseSend (or
// the first RecvMsg).
func (s *stream) SendMsg(m any) error {
	if s.request != nil || s.started {
		return newError(KindMisuse, codes.Internal, nil, "probeconn: a call sends one message")
	}
	msg, ok := m.(proto.Message)
	if !ok {
		return newError(KindMisuse, codes.Internal, nil, "probeconn: %T is not a protobuf message", m)
	}
	body, err := proto.Marshal(msg)
	if err != nil {
		return newError(KindMisuse, codes.Internal, err, "grpc: error while marshaling: %v", err)
	}
	framed := make([]byte, 5+len(body))
	binary.BigEndian.PutUint32(framed[1:], uint32(len(body)))
	copy(framed[5:], body)
	s.request = framed
	return nil
}

// CloseSend sends the call: HEADERS and the request with END_STREAM.
func (s *stream) CloseSend() error {
	if s.started {
		if s.halfDone {
			return nil
		}
		t := s.t
		err := t.write(func(fr *http2.Framer) error { return fr.WriteData(s.id, true, nil) })
		s.halfDone = true
		return s.sendError(err)
	}
	return s.start(true)
}

// sendError turns a failed send into the call's status: the stream's end
// if it has one (the reason the transport ended), else UNAVAILABLE.
func (s *stream) sendError(err error) error {
	if err == nil {
		return nil
	}
	if final, ended := s.end(); ended && final != nil {
		return final
	}
	return connectionError(err)
}

// end returns how the call ended, if it has.
func (s *stream) end() (final error, ended bool) {
	t := s.t
	if t == nil {
		return nil, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.final, s.ended
}

// start opens the stream on the Conn's transport and sends its HEADERS
// and request in one write.
func (s *stream) start(endStream bool) error {
	err := s.startOn(endStream)
	if err != nil && !s.started {
		s.stop()
	}
	return err
}

func (s *stream) startOn(endStream bool) error {
	if err := s.ctx.Err(); err != nil {
		return contextError(err)
	}
	t, err := s.conn.transport(s.ctx)
	if err != nil {
		return err
	}
	if err := t.waitWindow(s.ctx, int64(len(s.request))); err != nil {
		return err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.mu.Lock()
	if t.goAway {
		t.mu.Unlock()
		// Drained between transport() and here: like grpc-go's draining
		// transport, this is retried on the next connection by CheckOnce.
		return errDrained
	}
	if t.err != nil {
		err := t.err
		t.mu.Unlock()
		return err
	}
	if t.sendWindow < int64(len(s.request)) {
		// waitWindow saw room, but another call took it since. Rare
		// enough to fail rather than queue: the window is 64 KiB and a
		// health request a few bytes.
		t.mu.Unlock()
		return newError(KindBroken, codes.Unavailable, nil, "transport: no flow-control window left on the connection")
	}
	if err := s.ctx.Err(); err != nil {
		// Ended before it could be sent; cancel, which may have run,
		// found no transport.
		t.mu.Unlock()
		return contextError(err)
	}
	id := t.nextID
	t.nextID += 2
	s.t, s.id = t, id
	s.tp.Store(t)
	s.sendWindow = t.peerWindow - int64(len(s.request))
	t.sendWindow -= int64(len(s.request))
	s.started = true
	s.halfDone = endStream
	t.streams[id] = s
	t.mu.Unlock()

	request := s.request
	s.request = nil
	return s.sendError(t.writeLocked(func(fr *http2.Framer) error {
		t.hbuf.Reset()
		s.encodeHeaders(t.henc)
		err := fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID:      id,
			BlockFragment: t.hbuf.Bytes(),
			EndStream:     endStream && len(request) == 0,
			EndHeaders:    true,
		})
		if err != nil || len(request) == 0 {
			return err
		}
		return fr.WriteData(id, endStream, request)
	}))
}

func (s *stream) encodeHeaders(enc *hpack.Encoder) {
	field := func(name, value string) { _ = enc.WriteField(hpack.HeaderField{Name: name, Value: value}) }
	field(":method", "POST")
	if s.conn.opts.TLS {
		field(":scheme", "https")
	} else {
		field(":scheme", "http")
	}
	field(":path", s.method)
	field(":authority", s.conn.address)
	field("content-type", "application/grpc")
	field("te", "trailers")
	if ua := s.conn.opts.UserAgent; ua != "" {
		field("user-agent", ua)
	}
	if deadline, ok := s.ctx.Deadline(); ok {
		field("grpc-timeout", h2wire.FormatTimeout(time.Until(deadline)))
	}
}

// waitWindow waits until the connection's and a new stream's send windows
// hold n bytes, or the transport ends, or ctx does.
func (t *transport) waitWindow(ctx context.Context, n int64) error {
	for {
		t.mu.Lock()
		if t.err != nil || t.goAway || (t.sendWindow >= n && t.peerWindow >= n) {
			t.mu.Unlock()
			return nil
		}
		grown := t.windowGrown
		t.mu.Unlock()
		select {
		case <-grown:
		case <-ctx.Done():
			return contextError(ctx.Err())
		}
	}
}

// creditLocked counts n bytes consumed and returns the WINDOW_UPDATE
// increment to send now (0: none yet); the transport's mu must be held.
func (s *stream) creditLocked(n uint32) uint32 {
	s.recvUnacked += n
	if s.ended || s.recvUnacked < s.conn.opts.Window/4 {
		return 0
	}
	inc := s.recvUnacked
	s.recvUnacked = 0
	return inc
}

// RecvMsg receives the next message into m; at the end of a call that
// succeeded it returns io.EOF, else the call's status as an error.
func (s *stream) RecvMsg(m any) error {
	if !s.started {
		if err := s.start(false); err != nil {
			return err
		}
	}
	t := s.t
	for {
		t.mu.Lock()
		msg, ok, err := s.nextMessageLocked()
		var update uint32
		if ok {
			update = s.creditLocked(uint32(5 + len(msg)))
		}
		ended, final := s.ended, s.final
		t.mu.Unlock()
		if update > 0 {
			_ = t.write(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(s.id, update) })
		}
		switch {
		case err != nil:
			return err
		case ok:
			pm, isProto := m.(proto.Message)
			if !isProto {
				return newError(KindMisuse, codes.Internal, nil, "probeconn: %T is not a protobuf message", m)
			}
			if err := proto.Unmarshal(msg, pm); err != nil {
				return newError(KindMalformed, codes.Internal, err, "grpc: failed to unmarshal the received message: %v", err)
			}
			return nil
		case ended:
			if final == nil {
				return io.EOF
			}
			return final
		}
		<-s.notify
	}
}

// finishUnary waits for the end of a unary call whose response has
// arrived: the call's status, or an error if a second message comes.
func (s *stream) finishUnary() error {
	var extra emptypb.Empty // keeps whatever it holds as unknown fields
	switch err := s.RecvMsg(&extra); err {
	case io.EOF:
		return nil
	case nil:
		return newError(KindMalformed, codes.Internal, nil, "cardinality violation: expected <EOF> for non server-streaming RPCs, but received another message")
	default:
		return err
	}
}

// nextMessageLocked takes the next whole message off s.buf.
func (s *stream) nextMessageLocked() (msg []byte, ok bool, err error) {
	if len(s.buf) < 5 {
		return nil, false, nil
	}
	if s.buf[0] != 0 {
		return nil, false, newError(KindMalformed, codes.Internal, nil, "grpc: compressed message received, but the call asked for none")
	}
	n := int(binary.BigEndian.Uint32(s.buf[1:5]))
	if len(s.buf) < 5+n {
		return nil, false, nil
	}
	msg = s.buf[5 : 5+n]
	s.buf = s.buf[5+n:]
	if len(s.buf) == 0 {
		s.buf = nil // let a long-lived Watch stream hold no buffer while idle
	}
	return msg, true, nil
}

// dataLocked takes in a DATA frame's payload. It reports whether the
// stream must be reset: its message exceeds the limit.
func (s *stream) dataLocked(data []byte, endStream bool) (reset bool) {
	if s.ended {
		return false
	}
	if !s.gotHeaders {
		s.endLocked(newError(KindNotGRPC, codes.Internal, nil, "transport: malformed header: missing HTTP content-type (DATA before HEADERS)"))
		return !endStream
	}
	s.buf = append(s.buf, data...)
	if len(s.buf) >= 5 {
		if n := int(binary.BigEndian.Uint32(s.buf[1:5])); n > s.conn.opts.MaxRecvMessage {
			s.endLocked(newError(KindMalformed, codes.ResourceExhausted, nil, "grpc: received message larger than max (%d vs. %d)", n, s.conn.opts.MaxRecvMessage))
			s.buf = nil
			return !endStream
		}
	}
	if endStream {
		s.endLocked(newError(KindMalformed, codes.Internal, nil, "server closed the stream without sending trailers"))
	}
	return false
}

// headersLocked takes in a HEADERS block: the response headers, or the
// trailers (or both at once: a trailers-only response). It reports
// whether the stream must be reset.
func (s *stream) headersLocked(f *http2.MetaHeadersFrame) (reset bool) {
	if s.ended {
		return false
	}
	if !s.gotHeaders {
		s.gotHeaders = true
		if err := responseHeaderProblem(f); err != nil {
			s.endLocked(err)
			return !f.StreamEnded()
		}
		s.header = metadataOf(f)
		if !f.StreamEnded() {
			return false
		}
	} else if !f.StreamEnded() {
		s.endLocked(newError(KindMalformed, codes.Internal, nil, "transport: trailers without END_STREAM"))
		return true
	}
	s.trailer = metadataOf(f)
	s.endLocked(trailerStatus(f))
	return false
}

// responseHeaderProblem says why a response is not a gRPC answer (an
// Error of KindNotGRPC with the code and wording grpc-go's client gives),
// or nil.
func responseHeaderProblem(f *http2.MetaHeadersFrame) *Error {
	httpStatus := f.PseudoValue("status")
	if httpStatus == "" {
		return newError(KindNotGRPC, codes.Internal, nil, "transport: malformed header: missing HTTP status")
	}
	code, err := strconv.Atoi(httpStatus)
	if err != nil {
		return newError(KindNotGRPC, codes.Internal, err, "transport: malformed http-status: %v", err)
	}
	if code != http.StatusOK {
		return newError(KindNotGRPC, httpStatusCode(code), nil, "unexpected HTTP status code received from server: %d (%s)", code, http.StatusText(code))
	}
	if ct := headerValue(f, "content-type"); !isGRPCContentType(ct) {
		return newError(KindNotGRPC, codes.Unknown, nil, "transport: received unexpected content-type %q", ct)
	}
	return nil
}

func isGRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, "application/grpc")
	return ok && (rest == "" || rest[0] == '+' || rest[0] == ';')
}

// httpStatusCode is the gRPC code of an HTTP status (the gRPC spec's
// http-grpc-status-mapping).
func httpStatusCode(code int) codes.Code {
	switch code {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}

// trailerStatus is how the call ended, from its trailers: nil for OK,
// else an *Error (KindAnswered with the status the server answered).
func trailerStatus(f *http2.MetaHeadersFrame) error {
	raw := headerValue(f, "grpc-status")
	if raw == "" {
		return newError(KindMalformed, codes.Unknown, nil, "server closed the stream without a grpc-status")
	}
	code, ok := h2wire.ParseGRPCStatus(raw)
	if !ok {
		return newError(KindNotGRPC, code, nil, "transport: malformed grpc-status %q", raw)
	}
	if code == codes.OK {
		return nil
	}
	return &Error{Kind: KindAnswered, Status: status.New(code, h2wire.DecodeGRPCMessage(headerValue(f, "grpc-message")))}
}

func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.Fields {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

func metadataOf(f *http2.MetaHeadersFrame) metadata.MD {
	md := metadata.MD{}
	for _, hf := range f.RegularFields() {
		md[hf.Name] = append(md[hf.Name], hf.Value)
	}
	return md
}

// Header returns the response headers, once they have arrived.
func (s *stream) Header() (metadata.MD, error) {
	t := s.tp.Load()
	if t == nil {
		return nil, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.header, nil
}

// Trailer returns the trailers, once the call has ended.
func (s *stream) Trailer() metadata.MD {
	t := s.tp.Load()
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.trailer
}

// Context returns the call's context.
func (s *stream) Context() context.Context { return s.ctx }
