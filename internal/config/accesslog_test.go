package config

import (
	"strings"
	"testing"
)

func TestAccessLogSchema(t *testing.T) {
	tests := []struct {
		name string
		al   string
		want []string
		got  AccessLog
	}{
		{"absent", "", nil, AccessLog{Format: LogJSON, Buffer: DefaultAccessLogBuffer}},
		{"empty", "    access_log:\n", nil, AccessLog{Format: LogJSON, Buffer: DefaultAccessLogBuffer}},
		{"off", "    access_log: {path: \"\"}\n", nil, AccessLog{Format: LogJSON, Buffer: DefaultAccessLogBuffer, PathPos: Pos{5, 24}}},
		{"file", "    access_log:\n      path: /var/log/vigil/access.log\n      format: text\n      buffer: 100\n", nil,
			AccessLog{Path: "/var/log/vigil/access.log", Format: LogText, Buffer: 100, PathPos: Pos{6, 13}}},
		{"stdout", "    access_log: {path: stdout}\n", nil, AccessLog{Path: "stdout", Format: LogJSON, Buffer: DefaultAccessLogBuffer, PathPos: Pos{5, 24}}},
		{"bad format", "    access_log:\n      path: stdout\n      format: xml\n", []string{`t.yaml:7:15: listeners[0].access_log.format: must be one of json, text, not the string "xml"`}, AccessLog{}},
		{"buffer too small", "    access_log:\n      path: stdout\n      buffer: 1\n", []string{`t.yaml:7:15: listeners[0].access_log.buffer: must be from 16 to 1048576, not 1`}, AccessLog{}},
		{"path not a string", "    access_log:\n      path: [a]\n", []string{`t.yaml:6:13: listeners[0].access_log.path: must be a string, not a list`}, AccessLog{}},
		{"typo", "    access_log:\n      pth: stdout\n", []string{`t.yaml:6:7: listeners[0].access_log.pth: unknown field "pth"; did you mean "path"?`}, AccessLog{}},
		{"not a mapping", "    access_log: stdout\n", []string{`t.yaml:5:17: listeners[0].access_log: must be a mapping, not the string "stdout"`}, AccessLog{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tlsHead + tt.al + tlsTail
			checkLines(t, errorLines(t, data), tt.want)
			if tt.want != nil {
				return
			}
			cfg, err := Parse("t.yaml", []byte(data))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Listeners[0].AccessLog; got != tt.got {
				t.Fatalf("access_log = %+v, want %+v", got, tt.got)
			}
			var p Parser
			inc, err := p.Parse("t.yaml", []byte(data))
			if err != nil || inc.Listeners[0].AccessLog != tt.got {
				t.Fatalf("incremental parse: %+v, %v", inc.Listeners[0].AccessLog, err)
			}
			moved, err := p.Parse("t.yaml", []byte("# moved\n"+data))
			if err != nil || !moved.Listeners[0].Same(cfg.Listeners[0]) ||
				tt.got.On() && moved.Listeners[0].AccessLog.PathPos.Line != tt.got.PathPos.Line+1 {
				t.Fatalf("moved: %+v, %v", moved.Listeners[0].AccessLog, err)
			}
		})
	}
}

func TestAccessLogSame(t *testing.T) {
	base := tlsHead + "    access_log: {path: a.log}\n" + tlsTail
	a, _ := Parse("t.yaml", []byte(base))
	for _, change := range []string{"b.log", "a.log, format: text", "a.log, buffer: 64"} {
		b, err := Parse("t.yaml", []byte(strings.Replace(base, "a.log", change, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if a.Listeners[0].Same(b.Listeners[0]) {
			t.Errorf("%s: an access_log change is no listener change", change)
		}
	}
}
