package ordersvc

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	Register(srv, "b1", func(_ context.Context, method string, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
		if method == "Charge" {
			return nil, status.Error(codes.FailedPrecondition, "no money")
		}
		return nil, nil
	})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	defer func() { srv.Stop(); <-done }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if id, err := Call(ctx, cc, "Get"); err != nil || id != "b1" {
		t.Errorf("Get = %q, %v; want b1", id, err)
	}
	if _, err := Call(ctx, cc, "Charge"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Charge: %v, want the handler's FAILED_PRECONDITION", err)
	}
	if _, err := Call(ctx, cc, "Other"); status.Code(err) != codes.Unimplemented {
		t.Errorf("Other: %v, want UNIMPLEMENTED", err)
	}
}
