package main

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Metadata keys the interop TestService echoes back: the first as a header,
// the second as a trailer.
const (
	echoInitialKey  = "x-grpc-test-echo-initial"
	echoTrailingKey = "x-grpc-test-echo-trailing-bin"
)

// maxPayload bounds the response size a client may ask for, so a bad request
// gets an error instead of a huge allocation.
const maxPayload = 16 << 20

// maxPayloadSlack is what a message may hold beyond its payload.
const maxPayloadSlack = 64 << 10

// testService implements grpc.testing.TestService with the interop server's
// semantics (response sizes, status echo, metadata echo, response intervals)
// and fills server_id with the backend's id when asked. It is written here
// rather than taken from google.golang.org/grpc/interop because that package
// pulls OAuth and xDS dependencies into the module.
type testService struct {
	testpb.UnimplementedTestServiceServer
	id string
}

func (s *testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (s *testService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	echoMetadata(ctx, func(md metadata.MD) error { return grpc.SendHeader(ctx, md) }, func(md metadata.MD) error { return grpc.SetTrailer(ctx, md) })
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	payload, err := newPayload(req.GetResponseType(), req.GetResponseSize())
	if err != nil {
		return nil, err
	}
	if req.GetResponseCompressed().GetValue() {
		if err := grpc.SetSendCompressor(ctx, "gzip"); err != nil {
			return nil, status.Errorf(codes.Internal, "set gzip compressor: %v", err)
		}
	}
	resp := &testpb.SimpleResponse{Payload: payload}
	if req.GetFillServerId() {
		resp.ServerId = s.id
	}
	return resp, nil
}

func (s *testService) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testpb.TestService_StreamingOutputCallServer) error {
	echoMetadata(stream.Context(), stream.SendHeader, func(md metadata.MD) error { stream.SetTrailer(md); return nil })
	if err := echoStatus(req.GetResponseStatus()); err != nil {
		return err
	}
	return sendResponses(stream.Context(), stream, req.GetResponseType(), req.GetResponseParameters())
}

func (s *testService) StreamingInputCall(stream testpb.TestService_StreamingInputCallServer) error {
	echoMetadata(stream.Context(), stream.SendHeader, func(md metadata.MD) error { stream.SetTrailer(md); return nil })
	var total int
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(min(total, 1<<31-1))})
		}
		if err != nil {
			return err
		}
		total += len(req.GetPayload().GetBody())
	}
}

func (s *testService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	echoMetadata(stream.Context(), stream.SendHeader, func(md metadata.MD) error { stream.SetTrailer(md); return nil })
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := echoStatus(req.GetResponseStatus()); err != nil {
			return err
		}
		if err := sendResponses(stream.Context(), stream, req.GetResponseType(), req.GetResponseParameters()); err != nil {
			return err
		}
	}
}

func (s *testService) HalfDuplexCall(stream testpb.TestService_HalfDuplexCallServer) error {
	echoMetadata(stream.Context(), stream.SendHeader, func(md metadata.MD) error { stream.SetTrailer(md); return nil })
	var reqs []*testpb.StreamingOutputCallRequest
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		if err := echoStatus(req.GetResponseStatus()); err != nil {
			return err
		}
		if err := sendResponses(stream.Context(), stream, req.GetResponseType(), req.GetResponseParameters()); err != nil {
			return err
		}
	}
	return nil
}

// echoMetadata sends back the interop echo keys found in the request
// metadata, the first as a header and the second as a trailer.
func echoMetadata(ctx context.Context, sendHeader, setTrailer func(metadata.MD) error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return
	}
	if v := md.Get(echoInitialKey); len(v) > 0 {
		// An error means the stream is already gone; the RPC fails anyway.
		_ = sendHeader(metadata.Pairs(echoInitialKey, v[0]))
	}
	if v := md.Get(echoTrailingKey); len(v) > 0 {
		_ = setTrailer(metadata.Pairs(echoTrailingKey, v[0]))
	}
}

// echoStatus returns the error the client asked for with response_status.
func echoStatus(st *testpb.EchoStatus) error {
	if st == nil || st.GetCode() == 0 {
		return nil
	}
	return status.Error(codes.Code(st.GetCode()), st.GetMessage())
}

func newPayload(kind testpb.PayloadType, size int32) (*testpb.Payload, error) {
	if kind != testpb.PayloadType_COMPRESSABLE {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported payload type %v", kind)
	}
	if size < 0 || size > maxPayload {
		return nil, status.Errorf(codes.InvalidArgument, "response size %d: want 0 to %d bytes", size, maxPayload)
	}
	return &testpb.Payload{Type: kind, Body: make([]byte, size)}, nil
}

type responseSender interface {
	Send(*testpb.StreamingOutputCallResponse) error
}

// sendResponses sends one response per parameter, waiting its interval first.
func sendResponses(ctx context.Context, stream responseSender, kind testpb.PayloadType, params []*testpb.ResponseParameters) error {
	for _, p := range params {
		if us := p.GetIntervalUs(); us > 0 {
			timer := time.NewTimer(time.Duration(us) * time.Microsecond)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		payload, err := newPayload(kind, p.GetSize())
		if err != nil {
			return err
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload}); err != nil {
			return err
		}
	}
	return nil
}
