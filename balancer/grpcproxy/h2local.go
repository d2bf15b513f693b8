package grpcproxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// healthPrefix is the path prefix of the service the proxy answers itself.
const healthPrefix = "/grpc.health.v1.Health/"

// maxLocalRequest bounds a health request (a service name).
const maxLocalRequest = 64 << 10

func (p *Proxy) isLocal(path string) bool { return strings.HasPrefix(path, healthPrefix) }

// localCall is an RPC to the proxy's own grpc.health.v1.Health, answered
// from the shared health.Server: Check and List at once, Watch on a
// goroutine the proxy owns, ended by the client, its connection, or the
// start of shutdown (UNAVAILABLE: watchers already saw NOT_SERVING).
type localCall struct {
	s        *fstream
	method   string
	encoding string
	buf      []byte
	ctx      context.Context
	cancel   context.CancelFunc
	ran      bool
}

func (s *fstream) startLocal(path string, f *http2.MetaHeadersFrame, end bool) {
	lc := &localCall{s: s, method: strings.TrimPrefix(path, healthPrefix)}
	for _, h := range f.Fields {
		if h.Name == "grpc-encoding" {
			lc.encoding = h.Value
		}
	}
	lc.ctx, lc.cancel = context.WithCancel(s.p.stopping)
	s.local = lc
	if end {
		lc.run()
	}
}

func (lc *localCall) data(data []byte, end bool, _ *flusher) {
	if lc.ran {
		return
	}
	if len(lc.buf)+len(data) > maxLocalRequest {
		lc.ran = true
		lc.cancel()
		lc.s.fail(codes.ResourceExhausted, "vigil: health request too large", nil)
		return
	}
	lc.buf = append(lc.buf, data...)
	if end {
		lc.run()
	}
}

// message decodes the request's single gRPC message into m.
func (lc *localCall) message(m proto.Message) error {
	b := lc.buf
	if len(b) == 0 {
		return nil // no message: the default request
	}
	if len(b) < 5 || int(binary.BigEndian.Uint32(b[1:5])) != len(b)-5 {
		return status.Error(codes.Internal, "vigil: malformed health request")
	}
	body := b[5:]
	if b[0] == 1 {
		if lc.encoding != "gzip" {
			return status.Errorf(codes.Unimplemented, "vigil: health request compressed with unsupported %q", lc.encoding)
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return status.Errorf(codes.Internal, "vigil: health request: %v", err)
		}
		if body, err = io.ReadAll(io.LimitReader(zr, maxLocalRequest)); err != nil {
			return status.Errorf(codes.Internal, "vigil: health request: %v", err)
		}
	}
	if err := proto.Unmarshal(body, m); err != nil {
		return status.Errorf(codes.Internal, "vigil: health request: %v", err)
	}
	return nil
}

func (lc *localCall) run() {
	lc.ran = true
	p := lc.s.p
	switch lc.method {
	case "Check":
		var req healthpb.HealthCheckRequest
		if err := lc.message(&req); err != nil {
			lc.finish(nil, err)
			return
		}
		resp, err := p.health.Check(lc.ctx, &req)
		lc.finish(resp, err)
	case "List":
		var req healthpb.HealthListRequest
		if err := lc.message(&req); err != nil {
			lc.finish(nil, err)
			return
		}
		resp, err := p.health.List(lc.ctx, &req)
		lc.finish(resp, err)
	case "Watch":
		var req healthpb.HealthCheckRequest
		if err := lc.message(&req); err != nil {
			lc.finish(nil, err)
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			err := p.health.Watch(&req, &watchSender{lc: lc})
			if p.stopping.Err() != nil {
				err = status.Error(codes.Unavailable, "vigil is shutting down")
			}
			lc.finish(nil, err)
		}()
	default:
		lc.finish(nil, status.Errorf(codes.Unimplemented, "unknown method %s for service grpc.health.v1.Health", lc.method))
	}
}

// send writes one response message (with the response headers first).
func (lc *localCall) send(m proto.Message) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	msg := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(msg[1:5], uint32(len(b)))
	copy(msg[5:], b)
	s := lc.s
	w := s.dc.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if s.resp.done || w.err != nil {
		return errors.New("stream closed")
	}
	if !s.respStarted {
		w.writeHeadersLocked(s.downID, []hpack.HeaderField{
			{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
		}, false)
		s.respStarted = true
	}
	s.resp.sendLocked(msg, false)
	w.flushLocked()
	return nil
}

// finish sends resp (if any) and the status.
func (lc *localCall) finish(resp proto.Message, err error) {
	defer lc.cancel()
	s := lc.s
	if err == nil && resp != nil {
		if err = lc.send(resp); err != nil {
			s.finish(codes.Canceled)
			return
		}
	}
	if lc.ctx.Err() != nil && lc.s.p.stopping.Err() == nil {
		s.finish(codes.Canceled) // the client went away
		return
	}
	st := status.Convert(err)
	w := s.dc.w
	w.mu.Lock()
	if !s.resp.done {
		s.resp.trailersLocked(statusFields(st.Code(), st.Message(), !s.respStarted))
		s.respStarted = true
		w.flushLocked()
	}
	w.mu.Unlock()
	s.finish(st.Code())
}

// watchSender is the server stream health.Server.Watch writes to.
type watchSender struct {
	grpc.ServerStream
	lc *localCall
}

func (ws *watchSender) Send(m *healthpb.HealthCheckResponse) error { return ws.lc.send(m) }
func (ws *watchSender) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return errors.New("not a proto message")
	}
	return ws.lc.send(pm)
}
func (ws *watchSender) Context() context.Context     { return ws.lc.ctx }
func (ws *watchSender) SetHeader(metadata.MD) error  { return nil }
func (ws *watchSender) SendHeader(metadata.MD) error { return nil }
func (ws *watchSender) SetTrailer(metadata.MD)       {}
