package logging

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSwitchChangesFormatAndLevelOfDerivedLoggers(t *testing.T) {
	var buf bytes.Buffer
	sw := NewSwitch(&buf, config.LogText, slog.LevelInfo)
	derived := slog.New(sw.Handler()).With("cluster", "orders").WithGroup("g")

	derived.Info("first", "k", 1)
	derived.Debug("hidden")
	if got := buf.String(); !strings.Contains(got, "msg=first cluster=orders g.k=1") || strings.Contains(got, "hidden") {
		t.Fatalf("text output = %q", got)
	}

	buf.Reset()
	sw.Set(config.LogJSON, slog.LevelDebug)
	derived.Debug("second", "k", 2)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("after the switch the derived logger wrote %q: %v", buf.String(), err)
	}
	if rec["msg"] != "second" || rec["cluster"] != "orders" || rec["g"].(map[string]any)["k"] != 2.0 {
		t.Fatalf("json record = %v", rec)
	}
}

type sink struct{ events []*state.Event }

func (s *sink) AppendEvent(e *state.Event) (uint64, error) {
	s.events = append(s.events, e)
	return uint64(len(s.events)), nil
}

func TestEventLogCopiesEveryRecordWhateverTheLevel(t *testing.T) {
	var buf bytes.Buffer
	sw := NewSwitch(&buf, config.LogJSON, slog.LevelError)
	var s sink
	logger := slog.New(EventLog(sw.Handler(), &s)).With("cluster", "orders")

	logger.Warn("endpoint evicted", "endpoint", "127.0.0.1:1", "reason", "NOT_SERVING")
	logger.Debug("endpoint drained", "endpoint", "127.0.0.1:1")
	logger.Error("config rejected", "file", "x.yaml")

	// INFO and above are events, whatever the message; DEBUG is not.
	if len(s.events) != 2 || s.events[1].Msg != "config rejected" {
		t.Fatalf("sink got %d events (%v); want the WARN and the ERROR", len(s.events), s.events)
	}
	e := s.events[0]
	if e.Msg != "endpoint evicted" || e.Level != slog.LevelWarn {
		t.Fatalf("event = %+v", e)
	}
	keys := map[string]string{}
	for _, a := range e.Attrs {
		keys[a.Key] = a.Value.String()
	}
	if keys["cluster"] != "orders" || keys["endpoint"] != "127.0.0.1:1" || keys["reason"] != "NOT_SERVING" {
		t.Fatalf("event attrs = %v", keys)
	}
	// The log itself still obeys its level: only the ERROR record is written.
	if lines := strings.Count(buf.String(), "\n"); lines != 1 || !strings.Contains(buf.String(), "config rejected") {
		t.Fatalf("log output = %q", buf.String())
	}
}

func TestGRPCVerbosityFollowsDebug(t *testing.T) {
	var buf bytes.Buffer
	sw := NewSwitch(&buf, config.LogText, slog.LevelInfo)
	g := &grpcLogger{l: slog.New(sw.Handler())}
	if g.V(0) {
		t.Fatal("gRPC verbose logging on at info level")
	}
	g.Warningln("addrConn.createTransport failed")
	g.Errorf("bad %s", "thing")
	if out := buf.String(); strings.Contains(out, "createTransport") || !strings.Contains(out, "level=WARN msg=\"bad thing\"") {
		t.Fatalf("output = %q", out)
	}
	sw.Set(config.LogText, slog.LevelDebug)
	if !g.V(0) {
		t.Fatal("gRPC verbose logging off at debug level")
	}
}
