package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// startEcho is a TCP server on loopback that echoes what each connection
// sends until the client half-closes, then closes.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			})
		}
	})
	return ln.Addr().String()
}

// accessRecords reads the JSON records of an access log file.
func accessRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%s: not a JSON record: %v: %s", path, err, line)
		}
		out = append(out, m)
	}
	return out
}

// metricValue is the value of the series of family name with the label
// pairs given, from vigil's /metrics; -1 when there is none.
func metricValue(t *testing.T, admin, name string, labels ...string) float64 {
	t.Helper()
	code, body := get(t, "http://"+admin+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics answered %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	f := fams[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	return -1
}

// The records' fields are what the clients saw: status, bytes, the
// endpoint that answered, the client's own address, its user agent and
// authority; a tcp connection's bytes both ways and its result; the text
// format on another listener.
func TestAccessLogFields(t *testing.T) {
	dir := t.TempDir()
	grpcLog, tcpLog := filepath.Join(dir, "grpc.log"), filepath.Join(dir, "tcp.log")
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2")}
	echo := startEcho(t)
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{
			{Name: "api", Cluster: "demo", Extra: "access_log: {path: " + grpcLog + "}\nroutes: [{name: tests, service: grpc.testing.TestService, cluster: demo}]"},
			{Name: "raw", Protocol: "tcp", Cluster: "echo", Extra: "access_log: {path: " + tcpLog + ", format: text}"},
		},
		Clusters: []yamlCluster{
			{Name: "demo", Endpoints: addrs(bs)},
			{Name: "echo", Endpoints: []string{echo}, Health: "mode: tcp\ninterval: 100ms\ntimeout: 100ms"},
		},
	}.String())
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")
	byID := map[string]string{"b1": bs[0].addr, "b2": bs[1].addr}

	// The client's own address, as vigil sees it.
	var local atomic.Value
	conn, err := grpc.NewClient("passthrough:///"+v.listener("api"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("accesslog-test/1"),
		grpc.WithAuthority("orders.example.com:443"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil {
				local.Store(c.LocalAddr().String())
			}
			return c, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tc := testpb.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	type seen struct {
		status        string
		endpoint      string
		req, resp     int
		minDurationMs float64
	}
	var want []seen
	for i := range 6 {
		req := &testpb.SimpleRequest{FillServerId: true, ResponseSize: int32(100 * (i + 1)), Payload: &testpb.Payload{Body: make([]byte, 10*i)}}
		resp, err := tc.UnaryCall(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		// gRPC frames each message with 5 bytes.
		want = append(want, seen{"OK", byID[resp.ServerId], proto.Size(req) + 5, proto.Size(resp) + 5, 0})
	}
	bs[0].fail(codes.NotFound, 100)
	bs[1].fail(codes.NotFound, 100)
	req := &testpb.SimpleRequest{ResponseSize: 1}
	_, err = tc.UnaryCall(ctx, req)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("call to failing backends: %v", err)
	}
	want = append(want, seen{"NOT_FOUND", "", proto.Size(req) + 5, 0, 0})

	// A tcp connection: 3000 bytes echoed.
	c, err := net.Dial("tcp", v.listener("raw"))
	if err != nil {
		t.Fatal(err)
	}
	sent := bytes.Repeat([]byte("vigil"), 600)
	if _, err := c.Write(sent); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || len(got) != len(sent) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	tcpClient := c.LocalAddr().String()
	c.Close()

	var recs []map[string]any
	eventually(t, 10*time.Second, func() bool { recs = accessRecords(t, grpcLog); return len(recs) >= len(want) },
		"%d grpc records", len(want))
	if len(recs) != len(want) {
		t.Fatalf("%d records for %d RPCs: %v", len(recs), len(want), recs)
	}
	for i, w := range want {
		r := recs[i]
		checks := map[string]any{
			"listener": "api", "route": "tests", "cluster": "demo", "method": "/grpc.testing.TestService/UnaryCall",
			"authority": "orders.example.com:443", "grpc_status": w.status, "request_bytes": float64(w.req),
			"response_bytes": float64(w.resp), "attempts": 1.0, "client": local.Load(),
		}
		if w.endpoint != "" {
			checks["endpoint"] = w.endpoint
		}
		for k, v := range checks {
			if r[k] != v {
				t.Errorf("record %d: %s = %#v, want %#v (%v)", i, k, r[k], v, r)
			}
		}
		if ua, _ := r["user_agent"].(string); !strings.HasPrefix(ua, "accesslog-test/1 grpc-go/") {
			t.Errorf("record %d: user_agent %q", i, ua)
		}
		if ep, _ := r["endpoint"].(string); ep != bs[0].addr && ep != bs[1].addr {
			t.Errorf("record %d: endpoint %q is no backend", i, ep)
		}
		if d, ok := r["duration_ms"].(float64); !ok || d < 0 {
			t.Errorf("record %d: duration_ms %v", i, r["duration_ms"])
		}
		if ts, _ := r["time"].(string); func() error { _, err := time.Parse(time.RFC3339Nano, ts); return err }() != nil {
			t.Errorf("record %d: time %q", i, ts)
		}
	}

	var line string
	eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(tcpLog)
		line = strings.TrimSpace(string(b))
		return line != ""
	}, "the tcp record")
	for _, kv := range []string{"listener=raw", `route=""`, "cluster=echo", "endpoint=" + echo, "client=" + tcpClient,
		`sni=""`, "bytes_in=3000", "bytes_out=3000", "result=closed"} {
		if !strings.Contains(" "+line+" ", " "+kv+" ") {
			t.Errorf("tcp record lacks %s: %s", kv, line)
		}
	}
	if strings.Count(line, "\n") != 0 {
		t.Errorf("more than one tcp record: %s", line)
	}
}

// SIGUSR1 under load: the file is renamed (as logrotate does), vigil is
// signalled, records go on in a new file at the path, and every RPC has
// its record in one of the two.
func TestAccessLogReopenUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2")}
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo", Extra: "access_log: {path: " + path + "}"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: addrs(bs)}},
	}.String())
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")
	admin := v.adminAddr()

	c := dialClient(t, v.listener("api"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := c.call(cctx)
				ccancel()
				if ctx.Err() != nil && err != nil {
					return // cut by the test's end: the RPC may or may not have a record
				}
				calls.Add(1)
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	eventually(t, 20*time.Second, func() bool { return len(accessRecords(t, path)) >= 200 }, "200 records before the rotation")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	from := v.mark()
	v.signal(syscall.SIGUSR1)
	v.wait(10*time.Second, from, match("access log reopened", "path", path), "reopened")
	eventually(t, 20*time.Second, func() bool { return len(accessRecords(t, path)) >= 200 }, "200 records after the rotation")
	cancel()
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Errorf("%d RPCs failed", f)
	}
	if d := metricValue(t, admin, "vigil_access_log_dropped_total", "listener", "api"); d != 0 {
		t.Errorf("vigil_access_log_dropped_total = %v, want 0", d)
	}
	if err := v.stop(20 * time.Second); err != nil {
		t.Fatalf("vigil exited with %v", err)
	}
	// Stopping writes what was buffered; an RPC cut by the test's end
	// may have one more record than calls counted.
	before, after := accessRecords(t, path+".1"), accessRecords(t, path)
	n := int64(len(before) + len(after))
	if n < calls.Load() || n > calls.Load()+4 {
		t.Fatalf("%d+%d records for %d RPCs", len(before), len(after), calls.Load())
	}
	t.Logf("%d RPCs: %d records before the rotation, %d after", calls.Load(), len(before), len(after))
}

// A sink that blocks (a named pipe nobody reads) costs records, never
// RPCs: every call succeeds, the drops are counted, and what is read from
// the pipe later plus what was dropped is every RPC.
func TestAccessLogDropsWhenSinkBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skip("no named pipes:", err)
	}
	bs := []*backend{startBackend(t, "b1")}
	v := startVigil(t, yamlConfig{
		Admin:     true,
		Listeners: []yamlListener{{Name: "api", Cluster: "demo", Extra: "access_log: {path: " + path + ", buffer: 16}"}},
		Clusters:  []yamlCluster{{Name: "demo", Endpoints: addrs(bs)}},
	}.String())
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")
	admin := v.adminAddr()

	// A pipe holds 64 KiB, about 250 records, and the buffer 16 more.
	const n = 1500
	c := dialClient(t, v.listener("api"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if _, err := c.call(ctx); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		t.Fatalf("%d of %d RPCs failed with the access log blocked", f, n)
	}
	dropped := metricValue(t, admin, "vigil_access_log_dropped_total", "listener", "api")
	if dropped <= 0 {
		t.Fatalf("vigil_access_log_dropped_total = %v after %d RPCs into a pipe nobody reads", dropped, n)
	}

	// Now read the pipe: what was held comes out, and nothing more was
	// lost than counted.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := 0
	br := bufio.NewReader(f)
	deadline := time.Now().Add(20 * time.Second)
	var pending string // a line a read deadline cut
	for float64(lines)+dropped < n && time.Now().Before(deadline) {
		_ = f.SetReadDeadline(time.Now().Add(time.Second))
		line, err := br.ReadString('\n')
		pending += line
		if err == nil {
			if !json.Valid([]byte(pending)) {
				t.Fatalf("record %d is not JSON: %q", lines, pending)
			}
			lines++
			pending = ""
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal(err)
		}
	}
	if float64(lines)+dropped != n {
		t.Fatalf("%d records read and %v dropped for %d RPCs", lines, dropped, n)
	}
	t.Logf("%d RPCs: %d records through the pipe, %v dropped", n, lines, dropped)
}

// access_log reloads with the file: turned on, its format changed, moved
// to another file, turned off, each for the RPCs after the reload, on the
// same listener and connection; a path that cannot be opened is rejected
// at its line and column and the log in force keeps writing.
func TestAccessLogReload(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	bs := []*backend{startBackend(t, "b1")}
	cfg := func(extra string) string {
		return yamlConfig{
			Listeners: []yamlListener{{Name: "api", Cluster: "demo", Extra: extra}},
			Clusters:  []yamlCluster{{Name: "demo", Endpoints: addrs(bs)}},
		}.String()
	}
	v := startVigil(t, cfg(""))
	v.wait(15*time.Second, 0, match("ready: first round of health checks done"), "ready")
	c := dialClient(t, v.listener("api"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	calls := func(n int) {
		t.Helper()
		for range n {
			if _, err := c.call(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	lines := func(path string) []string {
		b, _ := os.ReadFile(path)
		s := strings.TrimSpace(string(b))
		if s == "" {
			return nil
		}
		return strings.Split(s, "\n")
	}
	reload := func(extra string) {
		t.Helper()
		from := v.mark()
		v.rewrite(cfg(extra))
		r, _ := v.wait(10*time.Second, from, func(r record) bool { return r.msg() == "config reloaded" || r.msg() == "config rejected" }, "reload")
		if r.msg() != "config reloaded" {
			t.Fatalf("reload of %q: %v", extra, r)
		}
	}
	calls(3)
	reload("access_log: {path: " + a + "}")
	calls(3)
	eventually(t, 10*time.Second, func() bool { return len(lines(a)) == 3 }, "3 JSON records in a")
	reload("access_log: {path: " + a + ", format: text}")
	calls(2)
	eventually(t, 10*time.Second, func() bool { return len(lines(a)) == 5 }, "2 text records more in a")
	if l := lines(a); !json.Valid([]byte(l[2])) || !strings.HasPrefix(l[4], "time=") {
		t.Fatalf("formats: %q", l)
	}

	// A path in a missing directory: rejected where it is written, and a
	// keeps getting the records.
	bad := filepath.Join(dir, "missing", "c.log")
	from := v.mark()
	v.rewrite(cfg("access_log: {path: " + bad + ", format: text}"))
	r, _ := v.wait(10*time.Second, from, func(r record) bool { return r.msg() == "config reloaded" || r.msg() == "config rejected" }, "reload")
	errs, _ := json.Marshal(r["errors"])
	if r.msg() != "config rejected" || !strings.Contains(string(errs), "vigil.yaml:14:24: listeners[0].access_log.path: open access log: ") {
		t.Fatalf("bad path: %v", r)
	}
	calls(1)
	eventually(t, 10*time.Second, func() bool { return len(lines(a)) == 6 }, "a record more in a after the rejection")

	reload("access_log: {path: " + b + "}")
	calls(4)
	eventually(t, 10*time.Second, func() bool { return len(lines(b)) == 4 }, "4 records in b")
	reload("")
	calls(3)
	// Nothing more anywhere: give the writer time it would need.
	time.Sleep(200 * time.Millisecond)
	if na, nb := len(lines(a)), len(lines(b)); na != 6 || nb != 4 {
		t.Fatalf("after turning the log off: %d records in a, %d in b; want 6 and 4", na, nb)
	}
}
