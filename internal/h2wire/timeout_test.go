package h2wire

import (
	"testing"
	"time"
)

func TestFormatTimeout(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "1n"},
		{-time.Second, "1n"},
		{time.Nanosecond, "1n"},
		{99_999_999, "99999999n"},
		{100 * time.Millisecond, "100000u"},
		{300 * time.Millisecond, "300000u"},
		{time.Second, "1000000u"},
		{2 * time.Second, "2000000u"},
		{100 * time.Second, "100000m"},
		{time.Hour, "3600000m"},
		{30 * time.Hour, "108000S"},
		{1000 * time.Hour, "3600000S"},
		{1000 * 24 * time.Hour, "86400000S"},
		{2000 * 24 * time.Hour, "2880000M"},
		{1 << 62, "76861434M"},
		{1<<63 - 1, "2562048H"},
	}
	for _, tt := range tests {
		got := FormatTimeout(tt.d)
		if got != tt.want {
			t.Errorf("FormatTimeout(%v) = %q, want %q", tt.d, got, tt.want)
		}
		// Rounding is up: the peer's deadline is never the sooner.
		if back, ok := ParseTimeout(got); !ok || back < tt.d {
			t.Errorf("ParseTimeout(%q) = %v, %v; want at least %v", got, back, ok, tt.d)
		}
	}
}

func TestParseTimeout(t *testing.T) {
	tests := []struct {
		v    string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true},
		{"0m", 0, true},
		{"99999999n", 99_999_999, true},
		{"5M", 5 * time.Minute, true},
		{"2H", 2 * time.Hour, true},
		{"250u", 250 * time.Microsecond, true},
		{"99999999H", 1<<63 - 1, true},
		{"", 0, false},
		{"1", 0, false},
		{"S", 0, false},
		{"123456789S", 0, false},
		{"-1S", 0, false},
		{"+1S", 0, false},
		{"1x", 0, false},
		{"1.5S", 0, false},
		{" 1S", 0, false},
	}
	for _, tt := range tests {
		got, ok := ParseTimeout(tt.v)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.ok)
		}
	}
}
