package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseJitter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"10%", 0.10, true},
		{"0%", 0, true},
		{"99.5%", 0.995, true},
		{"12.25%", 0.1225, true},
		{"100%", 1, true}, // a percentage; checker.Config.Validate judges the range
		{"150%", 1.5, true},
		{"-1%", 0, false},
		{"10", 0, false},
		{"%", 0, false},
		{"0.1", 0, false},
		{"1e1%", 0, false},
		{"+5%", 0, false},
		{"5.%", 0, false},
		{".5%", 0, false},
		{"NaN%", 0, false},
		{"inf%", 0, false},
		{"1_0%", 0, false},
		{"10 %", 0, false},
	} {
		got, err := parseJitter(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseJitter(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1024", 1024, true},
		{"1KiB", 1 << 10, true},
		{"512KiB", 512 << 10, true},
		{"4MiB", 4 << 20, true},
		{"1GiB", 1 << 30, true},
		{"3 MiB", 3 << 20, true},
		{"100B", 100, true},
		{"4MB", 0, false},
		{"4mib", 0, false},
		{"4 M", 0, false},
		{"MiB", 0, false},
		{"", 0, false},
		{"-1KiB", 0, false},
		{"1.5MiB", 0, false},
		{"99999999999999999999", 0, false},
		{"9999999999GiB", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for n, want := range map[int64]string{1024: "1KiB", 1 << 30: "1GiB", 3 << 20: "3MiB", 1000: "1000B", 0: "0B"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCheckAddress(t *testing.T) {
	for _, tc := range []struct {
		in               string
		endpoint, listen bool // accepted as an endpoint / listen address
	}{
		{"127.0.0.1:80", true, true},
		{"localhost:8080", true, true},
		{"backend-1.svc.cluster.local:50051", true, true},
		{"_grpc._tcp.example:443", true, true},
		{"[::1]:50051", true, true},
		{"[fe80::1%eth0]:80", true, true},
		{"h:65535", true, true},
		{"h:1", true, true},
		{"127.0.0.1:0", false, true},
		{":8080", false, true},
		{":0", false, true},
		{"h:65536", false, false},
		{"h:", false, false},
		{"h", false, false},
		{"", false, false},
		{"::1:80", false, false},
		{"[::1]", false, false},
		{"[::1:80", false, false},
		{"[1.2.3.4]:80", false, false},
		{"http://h:80", false, false},
		{"dns:///h:80", false, false},
		{"unix:/tmp/s", false, false},
		{"h:80/path", false, false},
		{"user@h:80", false, false},
		{"h h:80", false, false},
		{"h:+80", false, false},
		{"h:0x50", false, false},
		{"h:http", false, false},
		{"h:000080", false, false},
		{"-h:80", false, false},
		{"h-:80", false, false},
		{"a..b:80", false, false},
		{"1.2.3:80", false, false},
		{"256.0.0.1:80", false, false},
		{strings.Repeat("a", 64) + ":80", false, false},
		{strings.Repeat("a.", 127) + "a:80", false, false},
	} {
		if err := checkAddress(tc.in, endpointAddress); (err == nil) != tc.endpoint {
			t.Errorf("checkAddress(%q, endpoint) = %v, want ok=%v", tc.in, err, tc.endpoint)
		}
		if err := checkAddress(tc.in, listenAddress); (err == nil) != tc.listen {
			t.Errorf("checkAddress(%q, listen) = %v, want ok=%v", tc.in, err, tc.listen)
		}
	}
}

func TestAddressKey(t *testing.T) {
	same := [][2]string{
		{"[::1]:80", "[0:0::1]:80"},
		{"Host.Example:80", "host.example.:80"},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1:80"},
	}
	for _, p := range same {
		if addressKey(p[0]) != addressKey(p[1]) {
			t.Errorf("addressKey(%q) != addressKey(%q)", p[0], p[1])
		}
	}
	if addressKey("10.0.0.1:80") == addressKey("10.0.0.1:81") {
		t.Error("different ports share a key")
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"api", "orders.v1", "a-b_c", "A9", strings.Repeat("x", MaxNameLen)} {
		if err := checkName(ok); err != nil {
			t.Errorf("checkName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a/b", "ü", "a\n", strings.Repeat("x", MaxNameLen+1)} {
		if err := checkName(bad); err == nil {
			t.Errorf("checkName(%q) accepted", bad)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"interval", "timeout", "unhealthy_threshold", "healthy_threshold", "mode", "service"}
	for _, tc := range []struct{ in, want string }{
		{"intervall", "interval"},
		{"interva", "interval"},
		{"itnerval", "interval"},
		{"Timeout", "timeout"},
		{"unhealthy-threshold", "unhealthy_threshold"},
		{"healthyThreshold", "healthy_threshold"},
		{"mod", "mode"},
		{"services", "service"},
		{"frobnicate", ""},
		{"x", ""},
		{"", ""},
		{strings.Repeat("interval", 100), ""},
	} {
		if got := suggest(tc.in, known); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  Error
		want string
	}{
		{Error{File: "c.yaml", Line: 3, Col: 7, Path: "clusters[0].health_check.interval", Msg: "must be positive, not 0s"},
			"c.yaml:3:7: clusters[0].health_check.interval: must be positive, not 0s"},
		{Error{File: "c.yaml", Line: 2, Col: 1, Msg: "invalid YAML: x"}, "c.yaml:2:1: invalid YAML: x"},
		{Error{File: "c.yaml", Msg: "cannot read: permission denied"}, "c.yaml: cannot read: permission denied"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
	list := ErrorList{
		{File: "f", Line: 9, Col: 1, Msg: "c"},
		{File: "f", Line: 2, Col: 5, Msg: "b"},
		{File: "f", Line: 2, Col: 1, Msg: "a"},
		{File: "f", Line: 2, Col: 5, Msg: "b2"},
	}
	list.sort()
	if got, want := list.Error(), "f:2:1: a\nf:2:5: b\nf:2:5: b2\nf:9:1: c"; got != want {
		t.Errorf("sorted list:\n%s\nwant:\n%s", got, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.yaml")
	_, err := Load(missing)
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v; want one ErrorList entry wrapping fs.ErrNotExist", err)
	}
	if want := missing + ": cannot read: no such file or directory"; err.Error() != want {
		t.Errorf("Load(missing) = %q, want %q", err, want)
	}

	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("clusters: [{name: c, endpoints: [{address: \"h:1\"}]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(good)
	if err != nil || cfg.File != good {
		t.Fatalf("Load(good) = %+v, %v", cfg, err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("log: {level: loud}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if want := bad + `:1:14: log.level: must be one of debug, info, warn, error, not the string "loud"`; err == nil || err.Error() != want {
		t.Errorf("Load(bad) = %v, want %s", err, want)
	}

	if _, err := Load(dir); err == nil || !strings.HasPrefix(err.Error(), dir+": cannot read: ") {
		t.Errorf("Load(directory) = %v", err)
	}
}

func TestParseTooLarge(t *testing.T) {
	data := make([]byte, MaxFileSize+1)
	_, err := Parse("big.yaml", data)
	if err == nil || err.Error() != "big.yaml:1:1: file larger than 64MiB" {
		t.Errorf("Parse(huge) = %v", err)
	}
}

func TestConfigErrorf(t *testing.T) {
	cfg := mustParse(t, "listeners: [{name: a, address: \":0\", cluster: c}]\nclusters: [{name: c, endpoints: [{address: \"h:1\"}]}]\n")
	cfg.File = "vigil.yaml"
	err := cfg.Errorf(cfg.Listeners[0].Pos, "listeners[0].address", "cannot listen: %w", fs.ErrPermission)
	if want := "vigil.yaml:1:13: listeners[0].address: cannot listen: permission denied"; err.Error() != want {
		t.Errorf("Errorf = %q, want %q", err, want)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("Errorf does not wrap its %w operand")
	}
}
