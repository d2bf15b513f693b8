package accesslog

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	grpcKeys = []string{"time", "listener", "route", "cluster", "endpoint", "method", "authority", "grpc_status",
		"duration_ms", "request_bytes", "response_bytes", "attempts", "client", "user_agent"}
	tcpKeys = []string{"time", "listener", "route", "cluster", "endpoint", "client", "sni", "duration_ms",
		"bytes_in", "bytes_out", "result"}
)

var start = time.Date(2026, 12, 3, 11, 52, 1, 234567890, time.FixedZone("x", 3600))

func grpcRecord() Record {
	return Record{
		Kind: GRPC, Start: start, Duration: 1234567 * time.Nanosecond, Listener: "api", Cluster: "orders",
		Endpoint: "10.0.0.7:50051", Client: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000},
		Method: "/orders.v1.Orders/Get", Authority: "api.example.com", UserAgent: "grpc-go/1.85.0",
		Status: codes.Unavailable, RequestBytes: 1029, ResponseBytes: 7, Attempts: 2,
	}
}

func tcpRecord() Record {
	return Record{
		Kind: TCP, Start: start, Duration: 3 * time.Second, Listener: "db", Cluster: "pg",
		Client: &net.TCPAddr{IP: net.ParseIP("::1"), Port: 5555}, SNI: "db.example.com",
		BytesIn: 10, BytesOut: 20, Result: ResultIdleTimeout,
	}
}

// jsonKeys decodes one JSON line and returns its keys in order.
func jsonKeys(t *testing.T, line []byte) ([]string, map[string]any) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, line)
	}
	dec := json.NewDecoder(strings.NewReader(string(line)))
	var keys []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k.(string))
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys, m
}

func TestJSONRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Record
		keys []string
		want map[string]any
	}{
		{"grpc", grpcRecord(), grpcKeys, map[string]any{
			"time": "2026-12-03T10:52:01.234Z", "listener": "api", "route": "", "cluster": "orders",
			"endpoint": "10.0.0.7:50051", "method": "/orders.v1.Orders/Get", "authority": "api.example.com",
			"grpc_status": "UNAVAILABLE", "duration_ms": 1.234, "request_bytes": 1029.0, "response_bytes": 7.0,
			"attempts": 2.0, "client": "127.0.0.1:40000", "user_agent": "grpc-go/1.85.0",
		}},
		{"tcp", tcpRecord(), tcpKeys, map[string]any{
			"time": "2026-12-03T10:52:01.234Z", "listener": "db", "route": "", "cluster": "pg", "endpoint": "",
			"client": "[::1]:5555", "sni": "db.example.com", "duration_ms": 3000.0, "bytes_in": 10.0,
			"bytes_out": 20.0, "result": "idle_timeout",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := appendRecord(nil, &tc.r)
			if line[len(line)-1] != '\n' || strings.Count(string(line), "\n") != 1 {
				t.Fatalf("not one line: %q", line)
			}
			keys, m := jsonKeys(t, line)
			if !slices.Equal(keys, tc.keys) {
				t.Errorf("keys %v, want %v", keys, tc.keys)
			}
			for k, v := range tc.want {
				if m[k] != v {
					t.Errorf("%s = %#v, want %#v", k, m[k], v)
				}
			}
		})
	}
}

func TestTextRecords(t *testing.T) {
	r := grpcRecord()
	r.format = Text
	r.UserAgent = `my agent "x"=1`
	got := string(appendRecord(nil, &r))
	want := `time=2026-12-03T10:52:01.234Z listener=api route="" cluster=orders endpoint=10.0.0.7:50051 ` +
		`method=/orders.v1.Orders/Get authority=api.example.com grpc_status=UNAVAILABLE duration_ms=1.234 ` +
		`request_bytes=1029 response_bytes=7 attempts=2 client=127.0.0.1:40000 user_agent="my agent \"x\"=1"` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	tr := tcpRecord()
	tr.format, tr.Client = Text, nil
	got = string(appendRecord(nil, &tr))
	want = `time=2026-12-03T10:52:01.234Z listener=db route="" cluster=pg endpoint="" client="" sni=db.example.com ` +
		`duration_ms=3000.000 bytes_in=10 bytes_out=20 result=idle_timeout` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// Client-chosen strings stay one valid JSON line, whatever they hold.
func TestJSONEscaping(t *testing.T) {
	for _, s := range []string{"", `"\`, "a\nb\r\tc", "\x00\x1f\x7f", "\xff\xfe", "é ✓ 😀", "\u2028\u2029", "a\xc3"} {
		r := grpcRecord()
		r.Method, r.UserAgent = s, s
		line := appendRecord(nil, &r)
		if strings.Count(string(line), "\n") != 1 {
			t.Fatalf("%q: not one line: %q", s, line)
		}
		_, m := jsonKeys(t, line)
		// encoding/json's replacement of invalid bytes, one per byte.
		wb, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(wb, &want)
		if m["method"] != want {
			t.Errorf("%q: method %q, want %q", s, m["method"], want)
		}
		r.format = Text
		text := appendRecord(nil, &r)
		if strings.Count(string(text), "\n") != 1 {
			t.Errorf("%q: text not one line: %q", s, text)
		}
	}
}

func FuzzJSONString(f *testing.F) {
	f.Add("plain")
	f.Add("\x00\"\\\xff\u2028")
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q -> %s: %v", s, b, err)
		}
		wb, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(wb, &want)
		if got != want {
			t.Fatalf("%q round-tripped as %q, encoding/json's %q", s, got, want)
		}
		tb := appendTextString(nil, s)
		if s == "" || needsQuote(s) {
			if _, err := strconv.Unquote(string(tb)); err != nil {
				t.Fatalf("text %q -> %s: %v", s, tb, err)
			}
		}
	})
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSinkWritesAndReopens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	var dropped atomic.Int64
	l := s.Logger("api", JSON, func() { dropped.Add(1) })
	for i := range 100 {
		r := grpcRecord()
		r.Attempts = i
		l.Log(&r)
	}
	waitFor(t, "100 records written", func() bool { return s.Written() == 100 })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	s.Reopen()
	waitFor(t, "the new file", func() bool { _, err := os.Stat(path); return err == nil })
	tl := s.Logger("db", Text, nil)
	for range 10 {
		r := tcpRecord()
		tl.Log(&r)
	}
	s.Close()
	old, cur := readLines(t, path+".1"), readLines(t, path)
	if len(old) != 100 || len(cur) != 10 || dropped.Load() != 0 {
		t.Fatalf("%d records in the rotated file, %d in the new one, %d dropped; want 100, 10, 0", len(old), len(cur), dropped.Load())
	}
	for i, line := range old {
		_, m := jsonKeys(t, []byte(line))
		if m["attempts"] != float64(i) || m["listener"] != "api" {
			t.Fatalf("record %d out of order or wrong: %s", i, line)
		}
	}
	if !strings.HasPrefix(cur[0], "time=") || !strings.Contains(cur[0], " listener=db ") {
		t.Fatalf("text record: %s", cur[0])
	}
}

// A sink nobody reads (a named pipe without a reader) costs records, never
// a wait: Log returns at once and counts what the full buffer refused; Close
// returns too, cutting the blocked write.
func TestSinkBlockedDrops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip("no named pipes:", err)
	}
	s, err := Open(path, Options{Buffer: 64})
	if err != nil {
		t.Fatal(err)
	}
	var dropped atomic.Int64
	l := s.Logger("api", JSON, func() { dropped.Add(1) })
	// A pipe holds 64 KiB: a few hundred records, then the writer blocks
	// and the buffer of 64 fills.
	const n = 20000
	begin := time.Now()
	for range n {
		r := grpcRecord()
		l.Log(&r)
	}
	if d := dropped.Load(); d == 0 {
		t.Fatalf("no record dropped of %d logged to a pipe nobody reads", n)
	}
	t.Logf("%d of %d dropped in %v", dropped.Load(), n, time.Since(begin))
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("Close blocked on a pipe nobody reads")
	}
	// What reached the pipe is whole records.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestSinkStdout(t *testing.T) {
	for _, p := range []string{Stdout, Stderr} {
		s, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Reopen() // a no-op
		s.Close()
	}
	if _, err := Open("", Options{}); err == nil {
		t.Error("empty path opened")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "dir", "log"), Options{}); err == nil {
		t.Error("file in a missing directory opened")
	}
}

func TestParseFormat(t *testing.T) {
	for s, want := range map[string]Format{"json": JSON, "text": Text} {
		if f, err := ParseFormat(s); err != nil || f != want {
			t.Errorf("%s: %v, %v", s, f, err)
		}
	}
	if _, err := ParseFormat("xml"); err == nil {
		t.Error("xml accepted")
	}
}

// Logging allocates nothing (the record is copied into the buffer) and
// costs a channel send.
func TestLogAllocatesNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "a.log"), Options{Buffer: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	l := s.Logger("api", JSON, nil)
	r := grpcRecord()
	if n := testing.AllocsPerRun(1000, func() { l.Log(&r) }); n != 0 {
		t.Errorf("Log allocates %v times", n)
	}
}

func BenchmarkLog(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "a.log"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var dropped atomic.Int64
	l := s.Logger("api", JSON, func() { dropped.Add(1) })
	r := grpcRecord()
	b.ReportAllocs()
	for b.Loop() {
		l.Log(&r)
	}
	b.ReportMetric(float64(dropped.Load())/float64(b.N), "dropped/op")
}

func BenchmarkFormatJSON(b *testing.B) {
	r := grpcRecord()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendRecord(buf[:0], &r)
	}
}
