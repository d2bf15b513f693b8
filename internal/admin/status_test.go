package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/state"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// now is the seeded store's "now": 3m12s after t0.
var now = t0.Add(3*time.Minute + 12*time.Second)

func fixedNow() time.Time { return now }

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("output differs from %s:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func seededClient(t *testing.T) (*Client, *state.Store) {
	t.Helper()
	s := newStore(t)
	seed(t, s)
	_, base := start(t, Options{Store: s, Stats: fixedStats})
	c, err := NewClient(base)
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func TestStatusGolden(t *testing.T) {
	c, _ := seededClient(t)
	for _, tc := range []struct {
		golden string
		color  bool
	}{{"status.golden", false}, {"status_color.golden", true}} {
		var out bytes.Buffer
		err := Status(context.Background(), StatusOptions{Client: c, Out: &out, Color: tc.color, Now: fixedNow})
		if err != nil {
			t.Fatal(err)
		}
		golden(t, tc.golden, out.Bytes())
		if !tc.color && bytes.ContainsRune(out.Bytes(), '\x1b') {
			t.Fatal("escape codes without colour")
		}
	}
}

func TestStatusColumnsAlignWithColour(t *testing.T) {
	c, _ := seededClient(t)
	var plain, colored bytes.Buffer
	for _, x := range []struct {
		out   *bytes.Buffer
		color bool
	}{{&plain, false}, {&colored, true}} {
		if err := Status(context.Background(), StatusOptions{Client: c, Out: x.out, Color: x.color, Now: fixedNow}); err != nil {
			t.Fatal(err)
		}
	}
	stripped := stripANSI(colored.String())
	if stripped != plain.String() {
		t.Fatalf("coloured output without its escape codes differs from the plain one:\n%s\n---\n%s", stripped, plain.String())
	}
}

func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\x1b' {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestStatusEmpty(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	c, _ := NewClient(base)
	var out bytes.Buffer
	if err := Status(context.Background(), StatusOptions{Client: c, Out: &out, Now: fixedNow}); err != nil {
		t.Fatal(err)
	}
	if out.String() != "no clusters configured\n" {
		t.Fatalf("empty store: %q", out.String())
	}
}

func TestStatusJSONIsTheRawAnswer(t *testing.T) {
	c, _ := seededClient(t)
	var out bytes.Buffer
	if err := Status(context.Background(), StatusOptions{Client: c, Out: &out, JSON: true}); err != nil {
		t.Fatal(err)
	}
	_, _, raw := get(t, c.Base()+"/clusters")
	if !bytes.Equal(out.Bytes(), raw) {
		t.Fatalf("--json printed\n%s\nGET /clusters answered\n%s", out.Bytes(), raw)
	}
}

func TestStatusUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c, _ := NewClient(addr)
	err = Status(context.Background(), StatusOptions{Client: c, Out: &bytes.Buffer{}, Timeout: 5 * time.Second})
	if err == nil || !contains(err.Error(), "cannot reach the vigil admin API at http://"+addr, "admin.address") {
		t.Fatalf("Status against a closed port = %v", err)
	}
}

// syncBuffer is an output that a test reads while Status writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runStatus runs Status in a goroutine until the test ends or stop is
// called, which returns Status's error.
func runStatus(t *testing.T, opts StatusOptions) (out *syncBuffer, stop func() error) {
	t.Helper()
	out = &syncBuffer{}
	opts.Out = out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Status(ctx, opts) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return out, stop
}

// evict makes an endpoint unhealthy in the store and logs the eviction
// through the logging tee, as vigil does.
func evict(t *testing.T, s *state.Store, cluster, address string) {
	t.Helper()
	st := checker.Status{Health: checker.Unhealthy, Reason: "NOT_SERVING", Cause: checker.CauseAnswer, Since: now, Failures: 1}
	setStatus(t, s, cluster, address, st)
	var logs logBuffer
	eventLogger(s, &logs).Warn("endpoint evicted", "cluster", cluster, "endpoint", address, "check", "check",
		"reason", "NOT_SERVING", "failures", 1, "healthy", 0, "total", 2)
}

func TestStatusWatchPrintsAfterEachEvent(t *testing.T) {
	c, s := seededClient(t)
	out, stop := runStatus(t, StatusOptions{Client: c, Watch: true, Now: fixedNow})
	waitFor(t, "the first table", func() bool { return strings.Contains(out.String(), "127.0.0.1:50062") })
	// Only once the server follows the stream live is an event not
	// history (which a watch does not replay).
	waitFor(t, "the event stream", func() bool { return streams(t, c) == 1 })

	evict(t, s, "orders", "127.0.0.1:50051")
	waitFor(t, "the event and a new table", func() bool {
		return contains(out.String(), "== ", "WARN  endpoint evicted cluster=orders endpoint=127.0.0.1:50051")
	})
	waitFor(t, "the new table", func() bool {
		_, after, _ := strings.Cut(out.String(), "endpoint evicted")
		return strings.Contains(after, "orders    127.0.0.1:50051  unhealthy  NOT_SERVING")
	})
	if err := stop(); err != nil {
		t.Fatalf("Status after cancel = %v; want nil", err)
	}
	if strings.Contains(out.String(), clearScreen) {
		t.Fatal("cleared a screen that is not a terminal")
	}
}

// streams counts the event streams the server behind c is following
// live: an event logged once it counts one is delivered to it.
func streams(t *testing.T, c *Client) int64 {
	t.Helper()
	srv := servers[c.Base()]
	if srv == nil {
		t.Fatalf("no test server at %s", c.Base())
	}
	return srv.following.Load()
}

func TestStatusWatchJSON(t *testing.T) {
	c, s := seededClient(t)
	out, stop := runStatus(t, StatusOptions{Client: c, Watch: true, JSON: true})
	waitFor(t, "the event stream", func() bool { return streams(t, c) == 1 })
	evict(t, s, "orders", "127.0.0.1:50051")
	waitFor(t, "two JSON lines", func() bool { return strings.Count(out.String(), "\n") >= 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var last ClustersResponse
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &last); err != nil {
			t.Fatalf("line %d is not one JSON answer: %v\n%s", i, err, l)
		}
	}
	if h := last.Clusters[0].Endpoints[0].Health; h != "unhealthy" {
		t.Fatalf("last answer: endpoint %s", h)
	}
}

func TestStatusWatchTerminalRedraws(t *testing.T) {
	c, s := seededClient(t)
	out, stop := runStatus(t, StatusOptions{Client: c, Watch: true, Terminal: true, Refresh: 10 * time.Millisecond, Now: fixedNow})
	waitFor(t, "the event stream", func() bool { return streams(t, c) == 1 })
	evict(t, s, "orders", "127.0.0.1:50051")
	waitFor(t, "a redraw with the event", func() bool {
		screens := strings.Split(out.String(), clearScreen)
		last := screens[len(screens)-1]
		return strings.Count(out.String(), clearScreen) >= 2 &&
			contains(last, "vigil status  "+c.Base(), "recent events:", "endpoint evicted cluster=orders")
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStatusWatchRidesOutARestart(t *testing.T) {
	s := newStore(t)
	seed(t, s)
	srv := New(Options{Store: s})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	c, _ := NewClient(addr)
	out, stop := runStatus(t, StatusOptions{Client: c, Watch: true, Now: fixedNow})
	waitFor(t, "the event stream", func() bool { return srv.following.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-served
	waitFor(t, "the outage report", func() bool { return contains(out.String(), "== event stream from", "(retrying)") })

	// vigil comes back on the same address.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv2, _ := serveOn(t, ln, Options{Store: s})
	waitFor(t, "the reconnection", func() bool { return strings.Contains(out.String(), "== reconnected to http://"+addr) })
	waitFor(t, "the new stream", func() bool { return srv2.following.Load() == 1 })
	evict(t, s, "orders", "127.0.0.1:50051")
	waitFor(t, "the event after the restart", func() bool { return strings.Contains(out.String(), "endpoint evicted") })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestNewClientAddresses(t *testing.T) {
	for _, tc := range []struct{ in, base, err string }{
		{"", "http://127.0.0.1:9901", ""},
		{"127.0.0.1:9901", "http://127.0.0.1:9901", ""},
		{":9901", "http://127.0.0.1:9901", ""},
		{"localhost:1234", "http://localhost:1234", ""},
		{"[::1]:9901", "http://[::1]:9901", ""},
		{"http://10.0.0.1:9901/", "http://10.0.0.1:9901", ""},
		{"https://vigil.example:443", "https://vigil.example:443", ""},
		{"9901", "", "want host:port"},
		{"ftp://x:1", "", "want host:port or an http:// URL"},
		{"http://", "", "want host:port or an http:// URL"},
	} {
		c, err := NewClient(tc.in)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("NewClient(%q) = %v; want error with %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("NewClient(%q): %v", tc.in, err)
		case c.Base() != tc.base:
			t.Errorf("NewClient(%q).Base() = %q; want %q", tc.in, c.Base(), tc.base)
		}
	}
}

func TestReadEvents(t *testing.T) {
	stream := strings.Join([]string{
		"retry: 2000",
		": a comment",
		"",
		"id: 7",
		`data: {"time":"2026-11-24T10:00:00.123Z","level":"WARN","msg":"endpoint evicted","cluster":"orders",`,
		`data: "failures":1,"hint":"a b"}`,
		"",
		"event: unknown-type",
		"id: 8",
		`data:{"level":"INFO","msg":"config loaded","file":"x.yaml"}`,
		"",
		"id: 9", // an event without data is not dispatched
		"",
	}, "\n")
	var got []Event
	err := readEvents(strings.NewReader(stream), func(ev Event) error {
		got = append(got, ev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d events: %+v", len(got), got)
	}
	e := got[0]
	if e.Seq != 7 || e.Level != "WARN" || e.Msg != "endpoint evicted" || !e.Time.Equal(time.Date(2026, 11, 24, 10, 0, 0, 123e6, time.UTC)) {
		t.Errorf("first event %+v", e)
	}
	if len(e.Attrs) != 3 || e.Attrs[0].Key != "cluster" || e.Attr("failures") != "1" || e.Attr("hint") != "a b" {
		t.Errorf("first event's attrs %+v", e.Attrs)
	}
	if got[1].Seq != 8 || got[1].Attr("file") != "x.yaml" {
		t.Errorf("second event %+v", got[1])
	}

	if err := readEvents(strings.NewReader("id: x\ndata: {}\n\n"), func(Event) error { return nil }); err == nil {
		t.Error("a non-numeric id was accepted")
	}
	if err := readEvents(strings.NewReader("data: [1]\n\n"), func(Event) error { return nil }); err == nil {
		t.Error("data that is not an object was accepted")
	}
}

func TestFormatEvent(t *testing.T) {
	ev, err := parseEvent("3", []byte(`{"time":"2026-11-24T10:00:00.123Z","level":"WARN","msg":"endpoint evicted","cluster":"orders","endpoint":"127.0.0.1:1","failures":1,"hint":"register one","ok":true,"empty":""}`))
	if err != nil {
		t.Fatal(err)
	}
	ev.Time = time.Time{} // the local time zone is the machine's
	got := FormatEvent(ev, false)
	want := `WARN  endpoint evicted cluster=orders endpoint=127.0.0.1:1 failures=1 hint="register one" ok=true empty=""`
	if got != want {
		t.Fatalf("FormatEvent:\n got %s\nwant %s", got, want)
	}
	if c := FormatEvent(ev, true); !strings.Contains(c, ansiYellow+"WARN ") {
		t.Fatalf("coloured: %q", c)
	}
}

func TestAge(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{999 * time.Millisecond, "0s"},
		{42 * time.Second, "42s"},
		{3*time.Minute + 7*time.Second, "3m07s"},
		{5*time.Hour + 3*time.Minute + 59*time.Second, "5h03m"},
		{50 * time.Hour, "2d02h"},
	} {
		if got := age(tc.d); got != tc.want {
			t.Errorf("age(%v) = %q; want %q", tc.d, got, tc.want)
		}
	}
	for ms, want := range map[float64]string{0.0042: "4µs", 0.42: "420µs", 1.234: "1.2ms", 999: "999.0ms", 1500: "1.50s"} {
		if got := formatMillis(ms); got != want {
			t.Errorf("formatMillis(%v) = %q; want %q", ms, got, want)
		}
	}
}
