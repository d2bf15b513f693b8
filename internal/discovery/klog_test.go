package discovery

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"k8s.io/klog/v2"
)

func TestSetClientLogger(t *testing.T) {
	var buf bytes.Buffer
	SetClientLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(klog.ClearLogger)
	klog.ErrorS(errors.New("connection refused"), "Failed to watch")
	klog.V(4).InfoS("verbose detail")
	klog.InfoS("plain info")
	klog.Flush()
	out := buf.String()
	for _, want := range []string{`level=DEBUG msg="Failed to watch" component=client-go err="connection refused"`, `level=DEBUG msg="plain info"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "verbose detail") {
		t.Errorf("a V(4) record came through:\n%s", out)
	}

	buf.Reset()
	SetClientLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	klog.ErrorS(errors.New("x"), "Failed to watch")
	if buf.Len() != 0 {
		t.Errorf("at level info, client-go's records show: %s", buf.String())
	}
}
