package interoptest

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRunDirect runs every case straight against an interop server: the
// reference the proxy's run is compared with.
func TestRunDirect(t *testing.T) {
	srv := StartServer(t)
	Run(t, srv.Addr)
}

func TestCasesAreTheOfficialList(t *testing.T) {
	want := []string{
		"empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong",
		"empty_stream", "timeout_on_sleeping_server", "cancel_after_begin",
		"cancel_after_first_response", "status_code_and_message", "special_status_message",
		"unimplemented_method", "unimplemented_service", "custom_metadata", "rpc_soak", "channel_soak",
	}
	cases := Cases()
	if len(cases) != len(want) {
		t.Fatalf("%d cases, want %d", len(cases), len(want))
	}
	for i, c := range cases {
		if c.Name != want[i] {
			t.Errorf("case %d is %q, want %q", i, c.Name, want[i])
		}
	}
}
