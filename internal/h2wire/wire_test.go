package h2wire

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
)

func settingsFrame(t *testing.T, ss ...http2.Setting) *http2.SettingsFrame {
	t.Helper()
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, &buf)
	fr.AllowIllegalWrites = true
	if err := fr.WriteSettings(ss...); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	return f.(*http2.SettingsFrame)
}

func TestCheckSettings(t *testing.T) {
	tests := []struct {
		name       string
		s          http2.Setting
		fromServer bool
		code       http2.ErrCode // 0: valid
	}{
		{"window at the maximum", http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1}, false, 0},
		{"frame size too small", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1<<14 - 1}, false, http2.ErrCodeProtocol},
		{"frame size too large", http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24}, false, http2.ErrCodeProtocol},
		{"ENABLE_PUSH=2", http2.Setting{ID: http2.SettingEnablePush, Val: 2}, false, http2.ErrCodeProtocol},
		{"a client enabling push", http2.Setting{ID: http2.SettingEnablePush, Val: 1}, false, 0},
		{"a server enabling push", http2.Setting{ID: http2.SettingEnablePush, Val: 1}, true, http2.ErrCodeProtocol},
		{"unknown setting", http2.Setting{ID: 0x99, Val: 7}, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSettings(settingsFrame(t, tt.s), tt.fromServer)
			var ce *ConnError
			switch {
			case tt.code == 0 && err != nil:
				t.Fatalf("CheckSettings: %v", err)
			case tt.code != 0 && (!errors.As(err, &ce) || ce.Code != tt.code):
				t.Fatalf("CheckSettings = %v; want a ConnError %v", err, tt.code)
			}
		})
	}
}

func TestCheckServerPreface(t *testing.T) {
	settings := []byte{0, 0, 6, 4, 0, 0, 0, 0, 0}
	for name, tt := range map[string]struct {
		hdr []byte
		ok  bool
	}{
		"SETTINGS":              {settings, true},
		"SETTINGS ack":          {[]byte{0, 0, 0, 4, 1, 0, 0, 0, 0}, false},
		"HTTP/1.1":              {[]byte("HTTP/1.1 400 Bad"), false},
		"DATA":                  {[]byte{0, 0, 6, 0, 0, 0, 0, 0, 1}, false},
		"on a stream":           {[]byte{0, 0, 6, 4, 0, 0, 0, 0, 1}, false},
		"length not a multiple": {[]byte{0, 0, 5, 4, 0, 0, 0, 0, 0}, false},
		"too large":             {[]byte{0x01, 0, 2, 4, 0, 0, 0, 0, 0}, false},
		"short":                 {settings[:5], false},
	} {
		if err := CheckServerPreface(tt.hdr, 16<<10); (err == nil) != tt.ok {
			t.Errorf("%s: CheckServerPreface = %v", name, err)
		}
	}
}

func TestGRPCMessageRoundTrip(t *testing.T) {
	for _, msg := range []string{"", "plain", "100%", "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n", "%zz%4"} {
		enc := EncodeGRPCMessage(msg)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c < 0x20 || c > 0x7e {
				t.Errorf("EncodeGRPCMessage(%q) = %q: byte %#x", msg, enc, c)
			}
		}
		if got := DecodeGRPCMessage(enc); got != msg {
			t.Errorf("DecodeGRPCMessage(EncodeGRPCMessage(%q)) = %q", msg, got)
		}
	}
	if got := DecodeGRPCMessage("50%"); got != "50%" {
		t.Errorf("a lone %% is kept: %q", got)
	}
}

// TestDecodeGRPCMessage: what a backend's grpc-message may hold, as the
// probes and the proxy both read it.
func TestDecodeGRPCMessage(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"100%25 sure", "100% sure"},
		{"caf%C3%A9", "café"},
		{"bad %zz escape", "bad %zz escape"},
		{"trailing %4", "trailing %4"},
		{"%41", "A"},
	}
	for _, tt := range tests {
		if got := DecodeGRPCMessage(tt.in); got != tt.want {
			t.Errorf("DecodeGRPCMessage(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseGRPCStatus(t *testing.T) {
	if c, ok := ParseGRPCStatus("14"); !ok || c != codes.Unavailable {
		t.Errorf("ParseGRPCStatus(14) = %v, %v", c, ok)
	}
	for _, bad := range []string{"", "x", "-1", "1.0"} {
		if c, ok := ParseGRPCStatus(bad); ok || c != codes.Internal {
			t.Errorf("ParseGRPCStatus(%q) = %v, %v; want INTERNAL, false", bad, c, ok)
		}
	}
	if FormatGRPCStatus(codes.NotFound) != "5" {
		t.Error("FormatGRPCStatus")
	}
}

func TestFramerError(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		typ    http2.FrameType
		detail error
		want   *ConnError // nil: not a connection error
	}{
		{"window in SETTINGS", http2.ConnectionError(http2.ErrCodeFlowControl), http2.FrameSettings, nil,
			&ConnError{http2.ErrCodeFlowControl, "invalid SETTINGS value: SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1"}},
		{"with detail", http2.ConnectionError(http2.ErrCodeCompression), http2.FrameHeaders, errors.New("hpack: bad"),
			&ConnError{http2.ErrCodeCompression, "invalid HEADERS frame: hpack: bad"}},
		{"bare code", http2.ConnectionError(http2.ErrCodeFrameSize), http2.FramePing, nil,
			&ConnError{http2.ErrCodeFrameSize, "invalid PING frame"}},
		{"not a connection error", http2.ErrFrameTooLarge, http2.FrameData, nil, nil},
		{"a stream error", http2.StreamError{StreamID: 1, Code: http2.ErrCodeProtocol}, http2.FrameData, nil, nil},
	}
	for _, tt := range tests {
		got, ok := FramerError(tt.err, tt.typ, tt.detail)
		if ok != (tt.want != nil) || (ok && *got != *tt.want) {
			t.Errorf("%s: FramerError = %+v, %v; want %+v", tt.name, got, ok, tt.want)
		}
	}
}
