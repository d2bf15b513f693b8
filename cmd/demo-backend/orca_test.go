package main

import (
	"net/http"
	"testing"
	"time"

	v3orcaservicepb "github.com/cncf/xds/go/xds/service/orca/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestORCAReportsWhatIsSet(t *testing.T) {
	tb := startBackend(t, "-orca", "-utilization", "0.2", "-qps", "50", "-orca-min-interval", "50ms")
	stream, err := v3orcaservicepb.NewOpenRcaServiceClient(tb.conn).StreamCoreMetrics(callCtx(t),
		&v3orcaservicepb.OrcaLoadReportRequest{ReportInterval: durationpb.New(50 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.GetApplicationUtilization() != 0.2 || r.GetCpuUtilization() != 0.2 || r.GetRpsFractional() != 50 {
		t.Fatalf("first report %v, want utilization 0.2 at qps 50", r)
	}
	resp, err := http.Post(tb.control+"/load?utilization=0.8", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /load = %d", resp.StatusCode)
	}
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetApplicationUtilization() == 0.8 {
			if r.GetRpsFractional() != 50 {
				t.Fatalf("report %v: qps changed, want 50 kept", r)
			}
			break
		}
	}
	resp, err = http.Post(tb.control+"/load?utilization=high", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /load?utilization=high = %d, want 400", resp.StatusCode)
	}
}

func TestNoORCAByDefault(t *testing.T) {
	tb := startBackend(t)
	stream, err := v3orcaservicepb.NewOpenRcaServiceClient(tb.conn).StreamCoreMetrics(callCtx(t), &v3orcaservicepb.OrcaLoadReportRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamCoreMetrics without -orca: %v, want UNIMPLEMENTED", err)
	}
}
