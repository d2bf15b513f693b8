package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/checker"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

const hostile = `<script>alert(1)</script>"><img src=x onerror=alert(2)>`

func TestPageIsEscapedHTMLWithStrictCSP(t *testing.T) {
	store := newStore(t)
	seed(t, store)
	if err := store.Update(func(w state.Writer) error {
		if err := w.UpsertCluster(&state.Cluster{Name: hostile, LBPolicy: string(config.RoundRobin)}); err != nil {
			return err
		}
		return w.UpsertEndpoint(&state.Endpoint{Cluster: hostile, Address: "127.0.0.1:1", Weight: 1,
			Status: checker.Status{Health: checker.Unhealthy, Reason: hostile, Since: t0}})
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.AppendEvent(&state.Event{Time: t0, Level: slog.LevelWarn, Msg: "endpoint evicted",
		Attrs: []slog.Attr{slog.String("cluster", hostile), slog.String("endpoint", "127.0.0.1:1"), slog.String("error", hostile)}}); err != nil {
		t.Fatal(err)
	}
	_, base := start(t, Options{Store: store, Stats: fixedStats})

	res, body := getAccept(t, base+"/", "text/html,application/xhtml+xml,*/*;q=0.8")
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / as a browser: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if got := res.Header.Get("Content-Security-Policy"); got != pageCSP {
		t.Errorf("Content-Security-Policy %q, want %q", got, pageCSP)
	}
	for _, h := range []string{"X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"} {
		if res.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	for _, want := range []string{"127.0.0.1:50052", "NOT_SERVING", "payments", "least_request", "orders",
		"&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;", "/ui/app.js?v=" + pageAssetVersion} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<img") || strings.Contains(body, "<script>alert") || strings.Contains(body, " style=") {
		t.Errorf("page has markup from data, or inline style:\n%s", body)
	}
	// The hostile record reached the server-rendered tail, escaped.
	waitFor(t, "the record in the tail", func() bool {
		_, body := getAccept(t, base+"/", "text/html")
		return strings.Contains(body, "endpoint evicted")
	})

	// Anything but a browser keeps getting the index as text.
	res, body = getAccept(t, base+"/", "*/*")
	if !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") || !strings.Contains(body, "GET /clusters") {
		t.Errorf("GET / for curl: %s %q", res.Header.Get("Content-Type"), body)
	}

	// Filter and pagination of the server-rendered table.
	_, body = getAccept(t, base+"/?q=50061", "text/html")
	if !strings.Contains(body, "127.0.0.1:50061") || strings.Contains(body, "127.0.0.1:50051") {
		t.Errorf("?q=50061 does not filter the table")
	}
	_, body = getAccept(t, base+"/?problems=1", "text/html")
	if strings.Contains(body, "127.0.0.1:50051") || !strings.Contains(body, "127.0.0.1:50052") {
		t.Errorf("?problems=1 shows a healthy endpoint or hides an unhealthy one")
	}
}

func TestPageAssets(t *testing.T) {
	_, base := start(t, Options{Store: newStore(t)})
	for _, tc := range []struct {
		path, ctype, cache string
		status             int
	}{
		{"/ui/app.js?v=" + pageAssetVersion, "text/javascript", "immutable", 200},
		{"/ui/app.css?v=" + pageAssetVersion, "text/css", "immutable", 200},
		{"/ui/favicon.svg", "image/svg+xml", "no-cache", 200},
		{"/ui/index.html", "", "", 404},
		{"/ui/nope.js", "", "", 404},
	} {
		res, _ := getAccept(t, base+tc.path, "*/*")
		if res.StatusCode != tc.status {
			t.Errorf("%s: %d, want %d", tc.path, res.StatusCode, tc.status)
			continue
		}
		if tc.status == 200 && (!strings.HasPrefix(res.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(res.Header.Get("Cache-Control"), tc.cache)) {
			t.Errorf("%s: %s, %s", tc.path, res.Header.Get("Content-Type"), res.Header.Get("Cache-Control"))
		}
	}
	js := pageAssets["app.js"].body
	for _, banned := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(string(js), banned) {
			t.Errorf("app.js uses %s: build the DOM from text only", banned)
		}
	}
}

func TestPageStreamSnapshotChangesAndResume(t *testing.T) {
	store := newStore(t)
	seed(t, store)
	_, base := start(t, Options{Store: store, Stats: fixedStats})

	sse := openSSE(t, base+"/ui/stream", "")
	first := sse.next(t)
	if !first.msg.Full || len(first.msg.Names) != 2 || len(first.msg.Clusters) != 2 || len(first.msg.Endpoints) != 5 {
		t.Fatalf("first message: full=%v names=%v clusters=%d endpoints=%d", first.msg.Full, first.msg.Names, len(first.msg.Clusters), len(first.msg.Endpoints))
	}
	eps := endpointsByAddress(t, first.msg)
	if e := eps["127.0.0.1:50052"]; e.Row["health"] != "unhealthy" || e.Row["reason"] != "NOT_SERVING" || e.Row["weight"] != 2.0 {
		t.Errorf("50052 in the snapshot: %v", e.Row)
	}
	if e := eps["127.0.0.1:50051"]; e.Row["last_latency_ms"] != 1.234 || e.Row["inflight"] != 3.0 {
		t.Errorf("50051's figures: %v", e.Row)
	}

	// One endpoint changes: the next message carries it alone, with its
	// new span, and the eviction record with its hint.
	evicted := time.Now()
	setStatus(t, store, "orders", "127.0.0.1:50051", checker.Status{Health: checker.Unhealthy, Reason: "UNIMPLEMENTED", Since: evicted})
	if _, err := store.AppendEvent(&state.Event{Time: evicted.Add(time.Millisecond), Level: slog.LevelWarn, Msg: "endpoint evicted",
		Attrs: []slog.Attr{slog.String("cluster", "orders"), slog.String("endpoint", "127.0.0.1:50051"), slog.String("reason", "UNIMPLEMENTED"), slog.String("hint", "register one")}}); err != nil {
		t.Fatal(err)
	}
	var got sseEvent
	for {
		got = sse.next(t)
		if got.msg.Full {
			t.Fatal("a second full snapshot")
		}
		e, ok := endpointsByAddress(t, got.msg)["127.0.0.1:50051"]
		if ok && e.Row["hint"] == "register one" && len(got.msg.Log) > 0 {
			if e.Row["health"] != "unhealthy" || !strings.HasSuffix(spanCodesOf(e.TL), "u") {
				t.Errorf("50051 after its eviction: %v %v", e.Row, e.TL)
			}
			break
		}
	}
	if len(got.msg.Endpoints) != 1 {
		t.Errorf("%d endpoints in the update, want only the one that changed", len(got.msg.Endpoints))
	}
	var rec map[string]any
	if err := json.Unmarshal(got.msg.Log[len(got.msg.Log)-1], &rec); err != nil || rec["msg"] != "endpoint evicted" || rec["hint"] != "register one" {
		t.Errorf("log record %s (%v), want the record as /events sends it", got.msg.Log[len(got.msg.Log)-1], err)
	}

	// A page that reconnects with its id gets what changed since, not a
	// snapshot; one from another process gets a snapshot.
	setStatus(t, store, "payments", "127.0.0.1:50062", checker.Status{Health: checker.Healthy, Since: time.Now()})
	resumed := openSSE(t, base+"/ui/stream", got.id)
	for {
		ev := resumed.next(t)
		if ev.msg.Full {
			t.Fatal("resume got a full snapshot")
		}
		if e, ok := endpointsByAddress(t, ev.msg)["127.0.0.1:50062"]; ok {
			if e.Row["health"] != "healthy" {
				t.Errorf("50062 after resume: %v", e.Row)
			}
			if _, again := endpointsByAddress(t, ev.msg)["127.0.0.1:50051"]; again {
				t.Error("resume sent again a row the page had")
			}
			break
		}
	}
	other := openSSE(t, base+"/ui/stream", "0123456789abcdef.3")
	if ev := other.next(t); !ev.msg.Full || len(ev.msg.Endpoints) != 5 {
		t.Errorf("another epoch's id: full=%v with %d endpoints, want a full snapshot", ev.msg.Full, len(ev.msg.Endpoints))
	}
}

func TestPageStreamBoundsEachMessage(t *testing.T) {
	store := newStore(t)
	const n = 3000
	put := func(h checker.Health) {
		t.Helper()
		if err := store.Update(func(w state.Writer) error {
			if err := w.UpsertCluster(&state.Cluster{Name: "big", LBPolicy: string(config.RoundRobin)}); err != nil {
				return err
			}
			for i := range n {
				if err := w.UpsertEndpoint(&state.Endpoint{Cluster: "big", Address: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250), Weight: 1,
					Status: checker.Status{Health: h, Reason: "NOT_SERVING", Since: time.Now()}}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(checker.Healthy)
	_, base := start(t, Options{Store: store})
	sse := openSSE(t, base+"/ui/stream", "")
	if ev := sse.next(t); !ev.msg.Full || len(ev.msg.Endpoints) != n {
		t.Fatalf("snapshot with %d endpoints, want %d", len(ev.msg.Endpoints), n)
	}
	// Every endpoint flips at once: the updates come in bounded messages
	// that, together, carry each endpoint once.
	put(checker.Unhealthy)
	seen := map[string]int{}
	messages := 0
	for len(seen) < n {
		ev := sse.next(t)
		messages++
		if ev.size > pageBudget+8<<10 {
			t.Errorf("message of %d bytes, over the budget of %d", ev.size, pageBudget)
		}
		for addr, e := range endpointsByAddress(t, ev.msg) {
			if e.Row["health"] == "unhealthy" {
				seen[addr]++
			}
		}
	}
	for addr, c := range seen {
		if c != 1 {
			t.Errorf("%s sent %d times", addr, c)
		}
	}
	if messages < 2 {
		t.Errorf("%d endpoints changed in %d message(s): not bounded", n, messages)
	}
}

func TestWireSpans(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) time.Time { return now.Add(-ago) }
	for _, tc := range []struct {
		name  string
		spans []span
		want  string
	}{
		{"one span", []span{{at(time.Hour), spanHealthy}}, "h"},
		{"a short pending, then healthy", []span{{at(10 * time.Minute), spanPending}, {at(10*time.Minute - time.Millisecond), spanHealthy}}, "ph"},
		{"one short eviction between healthy spans", []span{{at(10 * time.Minute), spanHealthy}, {at(time.Minute), spanUnhealthy}, {at(time.Minute - time.Second), spanHealthy}}, "huh"},
		{"flapping", []span{{at(time.Minute), spanHealthy}, {at(50 * time.Second), spanUnhealthy}, {at(49 * time.Second), spanHealthy}, {at(48 * time.Second), spanUnhealthy}, {at(47 * time.Second), spanHealthy}, {at(40 * time.Second), spanHealthy}}, "hfh"},
		{"a span that ended before the window", []span{{at(time.Hour), spanUnhealthy}, {at(20 * time.Minute), spanHealthy}}, "h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			he := &hubEndpoint{spans: tc.spans}
			he.trim(now)
			got := he.wireSpans(now)
			var codes string
			for _, s := range got {
				codes += s[1].(string)
			}
			if codes != tc.want {
				t.Errorf("codes %q, want %q (%v)", codes, tc.want, got)
			}
			if first := got[0][0].(int64); first < now.Add(-pageWindow).UnixMilli() {
				t.Errorf("first span starts before the window")
			}
		})
	}
}

// ---- helpers ----

func getAccept(t *testing.T, url, accept string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return res, b.String()
}

type wireEndpoint struct {
	ID  uint64         `json:"id"`
	C   string         `json:"c"`
	Row map[string]any `json:"row"`
	TL  [][2]any       `json:"tl"`
}

type wireMsg struct {
	pageMsg
	Endpoints []wireEndpoint `json:"endpoints"`
}

type sseEvent struct {
	id   string
	msg  wireMsg
	size int
}

type sseClient struct {
	events chan sseEvent
	done   chan struct{}
}

// openSSE follows a stream in a goroutine the test owns.
func openSSE(t *testing.T, url, lastID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sseClient{events: make(chan sseEvent, 64), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data := strings.TrimPrefix(line, "data: ")
				ev.size = len(data)
				if err := json.Unmarshal([]byte(data), &ev.msg); err != nil {
					return
				}
			case line == "" && ev.size > 0:
				select {
				case c.events <- ev:
				case <-ctx.Done():
					return
				}
				ev = sseEvent{}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-c.done
	})
	return c
}

func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-c.done:
		t.Fatal("stream ended")
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return sseEvent{}
}

func endpointsByAddress(t *testing.T, m wireMsg) map[string]wireEndpoint {
	t.Helper()
	out := map[string]wireEndpoint{}
	for _, e := range m.Endpoints {
		addr, _ := e.Row["address"].(string)
		out[addr] = e
	}
	return out
}

func spanCodesOf(tl [][2]any) string {
	var s string
	for _, x := range tl {
		c, _ := x[1].(string)
		s += c
	}
	return s
}
