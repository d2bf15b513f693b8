// Package ordersvc is a second gRPC service for the demo backends and the
// tests, so that one vigil listener can be shown routing two services:
// orders.v1.Orders, with the unary methods Get and Charge. It reuses the
// messages of grpc.testing (SimpleRequest in, SimpleResponse out, whose
// server_id names the backend that answered), so it needs no generated
// code of its own: the service is described by hand.
package ordersvc

import (
	"context"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// Names of the service and its methods, as :path carries them.
const (
	Service = "orders.v1.Orders"
	Get     = "/" + Service + "/Get"
	Charge  = "/" + Service + "/Charge"
)

// Handler answers a call; method is "Get" or "Charge". A nil error and a
// nil response answer the default response (server_id set).
type Handler func(ctx context.Context, method string, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error)

type server struct {
	id string
	h  Handler
}

// Register registers orders.v1.Orders on s, answering as backend id; h,
// if not nil, is called first (to fail or hold calls in tests).
func Register(s grpc.ServiceRegistrar, id string, h Handler) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: Service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Get", Handler: handler("Get")},
			{MethodName: "Charge", Handler: handler("Charge")},
		},
		Metadata: "orders/v1/orders.proto",
	}, &server{id: id, h: h})
}

func handler(method string) func(srv any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
		s := srv.(*server)
		req := new(testpb.SimpleRequest)
		if err := dec(req); err != nil {
			return nil, err
		}
		call := func(ctx context.Context, req any) (any, error) {
			if s.h != nil {
				resp, err := s.h(ctx, method, req.(*testpb.SimpleRequest))
				if err != nil || resp != nil {
					return resp, err
				}
			}
			return &testpb.SimpleResponse{ServerId: s.id, Hostname: Service + "/" + method}, nil
		}
		if intercept == nil {
			return call(ctx, req)
		}
		return intercept(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + Service + "/" + method}, call)
	}
}

// Call calls method (Get or Charge) on cc and returns the id of the
// backend that answered.
func Call(ctx context.Context, cc grpc.ClientConnInterface, method string, opts ...grpc.CallOption) (string, error) {
	resp := new(testpb.SimpleResponse)
	if err := cc.Invoke(ctx, "/"+Service+"/"+method, &testpb.SimpleRequest{FillServerId: true}, resp, opts...); err != nil {
		return "", err
	}
	return resp.ServerId, nil
}
