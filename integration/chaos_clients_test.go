package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// chaosClients is vigil with a grpc listener "api" and a tcp listener "raw"
// in front of two backends, for the client abuse tests.
type chaosClients struct {
	v     *vigilProc
	admin string
	bs    []*chaosBackend
	api   string
	raw   string
	probe *chaosLatencyProbe
}

// newChaosClients starts the fixture; listener holds extra YAML lines for
// the grpc listener (limits), and optionally a second argument those of the
// tcp listener.
func newChaosClients(t *testing.T, listener string, tcpListener ...string) *chaosClients {
	t.Helper()
	c := &chaosClients{bs: []*chaosBackend{startChaosBackend(t, "b1"), startChaosBackend(t, "b2")}}
	// The backends live in the test process, next to the abusive clients:
	// a probe that waits for a CPU there must not evict them (these tests
	// are about clients), hence a lenient check and panic routing.
	c.v, c.admin = startChaosVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "api", Cluster: "demo", Extra: listener},
			{Name: "raw", Protocol: "tcp", Cluster: "demo", Extra: strings.Join(tcpListener, "\n")}},
		Clusters: []yamlCluster{{Name: "demo", Panic: 50, Endpoints: []string{c.bs[0].addr, c.bs[1].addr},
			Health: "mode: check\ninterval: 1s\ntimeout: 1s\nunhealthy_threshold: 5\nhealthy_threshold: 1"}},
	})
	for _, b := range c.bs {
		c.v.wait(20*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	c.api, c.raw = c.v.listener("api"), c.v.listener("raw")
	c.probe = newChaosLatencyProbe(t, c.api)
	return c
}

// settleBaseline warms the well-behaved client up and takes the baseline
// with it connected.
func (c *chaosClients) settleBaseline(t *testing.T) (chaosSample, latencies) {
	t.Helper()
	before, errs := c.probe.measure(time.Second)
	if len(errs) > 0 {
		t.Fatalf("the well-behaved client fails before any abuse: %v", errs[0])
	}
	return chaosBaseline(t, c.v, c.admin), before
}

// backendsIdle waits until no TestService call is running on the backends:
// whatever vigil was forwarding for the abusive clients was cancelled.
func (c *chaosClients) backendsIdle(t *testing.T) {
	t.Helper()
	eventually(t, 20*time.Second, func() bool { return c.bs[0].active.Load() == 0 && c.bs[1].active.Load() == 0 },
		"backend calls of the abusive clients end (active: %d, %d)", c.bs[0].active.Load(), c.bs[1].active.Load())
}

// TestChaosClientSlowloris opens hundreds of connections that send nothing,
// half a preface, or a preface and then nothing: vigil drops the first two
// kinds at its handshake timeout (10s) and the idle ones at the listener's
// idle_timeout, with a GOAWAY, and serves a well-behaved client meanwhile.
func TestChaosClientSlowloris(t *testing.T) {
	t.Parallel()
	c := newChaosClients(t, "idle_timeout: 2s\nmax_connections: 2000")
	baseline, before := c.settleBaseline(t)

	type kind struct {
		name  string
		n     int
		send  func(*chaosRaw) error
		limit time.Duration // by when vigil must have closed it
		// goAway: vigil says goodbye with a GOAWAY (NO_ERROR) first.
		goAway bool
	}
	kinds := []kind{
		{"nothing", 200, func(*chaosRaw) error { return nil }, 15 * time.Second, false},
		{"half a preface", 100, func(r *chaosRaw) error {
			_, err := io.WriteString(r.nc, http2.ClientPreface[:12])
			return err
		}, 15 * time.Second, false},
		{"preface, then idle", 100, (*chaosRaw).handshake, 2*time.Second + 5*time.Second, true},
	}
	type result struct {
		kind string
		out  rawOutcome
	}
	results := make(chan result, 400)
	var opened []*chaosRaw
	var names []string
	for _, k := range kinds {
		for range k.n {
			r := dialChaosRaw(t, c.api)
			if err := k.send(r); err != nil {
				t.Fatalf("%s: %v", k.name, err)
			}
			opened = append(opened, r)
			names = append(names, k.name)
		}
	}
	limits := map[string]kind{}
	for _, k := range kinds {
		limits[k.name] = k
	}
	held := chaosMeasure(t, c.v, c.admin)
	t.Logf("with %d slow connections open: %v; %.0f KiB of heap per connection", len(opened), held,
		float64(held.HeapAlloc-baseline.HeapAlloc)/float64(len(opened))/1024)
	during, errs := c.probe.during(2*time.Second, func() {
		var wg sync.WaitGroup
		for i, r := range opened {
			wg.Go(func() { results <- result{names[i], r.readUntilClosed(limits[names[i]].limit + 5*time.Second)} })
		}
		wg.Wait()
		close(results)
	})
	slowest := map[string]time.Duration{}
	for res := range results {
		k := limits[res.kind]
		switch {
		case !res.out.Closed:
			t.Errorf("%s: a connection still open after %v", res.kind, res.out.After)
		case res.out.After > k.limit:
			t.Errorf("%s: closed after %v; want within %v", res.kind, res.out.After, k.limit)
		case k.goAway && (res.out.GoAway == nil || res.out.GoAway.ErrCode != http2.ErrCodeNo || !res.out.Settings):
			t.Errorf("%s: closed without SETTINGS and a graceful GOAWAY first: %+v", res.kind, res.out)
		}
		slowest[res.kind] = max(slowest[res.kind], res.out.After)
	}
	t.Logf("slowloris: all 400 connections closed by vigil; the last of each kind after %v", slowest)
	requireLatency(t, "slowloris", before, during, errs)
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after slowloris")
}

// TestChaosClientHalfOpen has clients vanish without a FIN or a reset (their
// host died): on the grpc listener idle ones, and ones with a call open at
// the backend; on the tcp listener ones whose connection was spliced to a
// backend, next to ones that never send a byte. vigil must find them gone
// by itself, drop the connections (and their backend side) and cancel
// their backend calls.
func TestChaosClientHalfOpen(t *testing.T) {
	t.Parallel()
	c := newChaosClients(t, "idle_timeout: 2s", "idle_timeout: 1s")
	baseline, before := c.settleBaseline(t)

	const idle, busy = 50, 50
	var conns []*chaosRaw
	for i := range idle + busy {
		r := dialChaosRaw(t, c.api)
		if err := r.handshake(); err != nil {
			t.Fatal(err)
		}
		if i >= idle {
			// A bidi call open at a backend, waiting for the client's
			// first message.
			if err := r.headers(1, grpcRequest("/grpc.testing.TestService/FullDuplexCall"), false); err != nil {
				t.Fatal(err)
			}
		}
		conns = append(conns, r)
	}
	const tcpVanished, tcpSilent = 30, 30
	var tcpConns []net.Conn
	for i := range tcpVanished + tcpSilent {
		nc, err := net.DialTimeout("tcp", c.raw, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		if i < tcpVanished {
			if _, err := io.WriteString(nc, http2.ClientPreface[:12]); err != nil {
				t.Fatal(err)
			}
		}
		tcpConns = append(tcpConns, nc)
	}
	eventually(t, 20*time.Second, func() bool { return c.bs[0].active.Load()+c.bs[1].active.Load() == busy },
		"%d calls open at the backends (%d, %d)", busy, c.bs[0].active.Load(), c.bs[1].active.Load())
	eventually(t, 20*time.Second, func() bool {
		return chaosGauge(t, c.admin, "vigil_listener_active_connections", `listener="raw"`) == tcpVanished+tcpSilent
	}, "the tcp clients' connections spliced to backends")
	mustVanish := func(nc net.Conn) {
		if err := vanish(nc); err != nil {
			if errors.Is(err, syscall.EPERM) {
				t.Skipf("cannot make a half-open connection here (TCP_REPAIR needs CAP_NET_ADMIN): %v", err)
			}
			t.Fatal(err)
		}
	}
	for _, nc := range tcpConns[:tcpVanished] {
		mustVanish(nc)
	}
	for _, r := range conns {
		mustVanish(r.nc)
	}
	start := time.Now()
	during, errs := c.probe.during(2*time.Second, func() {
		// Idle connections: the idle timeout's GOAWAY meets a reset.
		// Busy ones: nothing is written to them; TCP keepalive (Go's
		// default on accepted connections: first probe after 15s idle)
		// finds the peer gone.
		// tcp: the idle timeout closes both sides of every pair.
		eventually(t, 20*time.Second, func() bool {
			return chaosGauge(t, c.admin, "vigil_listener_active_connections", `listener="raw"`) == 0
		}, "vigil closes the idle tcp pairs")
		tcpDone := time.Since(start)
		for _, nc := range tcpConns[tcpVanished:] {
			if closed, _ := waitClosed(nc, 5*time.Second); !closed {
				t.Errorf("a silent tcp client's connection is still open after the idle timeout")
			}
		}
		c.backendsIdle(t)
		eventually(t, 40*time.Second, func() bool {
			return chaosGauge(t, c.admin, "vigil_listener_active_connections", `listener="api"`) == 1
		}, "vigil drops the vanished clients' connections (only the well-behaved one left)")
		t.Logf("half-open: tcp listener: %d vanished and %d silent clients' pairs closed %v after (idle_timeout 1s)",
			tcpVanished, tcpSilent, tcpDone.Round(100*time.Millisecond))
	})
	t.Logf("half-open: grpc listener: %d idle and %d busy vanished clients dropped, their %d backend calls cancelled, %v after they vanished",
		idle, busy, busy, time.Since(start).Round(100*time.Millisecond))
	requireLatency(t, "half-open", before, during, errs)
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after half-open clients")
}

// chaosGauge reads one series of a labelled vigil metric (labels as they
// appear in the text format, e.g. `listener="api"`), or -1.
func chaosGauge(t testing.TB, base, family, labels string) float64 {
	t.Helper()
	m, err := chaosScrapeSeries(base, family)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range m {
		if strings.Contains(k, labels) {
			return v
		}
	}
	return -1
}

// TestChaosClientMalformed sends what is not HTTP/2, or broken HTTP/2, on
// fresh connections: vigil closes each one promptly, with the GOAWAY the
// protocol asks for where there is one, and keeps serving.
func TestChaosClientMalformed(t *testing.T) {
	t.Parallel()
	c := newChaosClients(t, "")
	baseline, before := c.settleBaseline(t)

	tests := []struct {
		name   string
		send   func(*chaosRaw) error
		goAway http2.ErrCode // 0xff: no GOAWAY expected (not HTTP/2 at all)
	}{
		{"HTTP/1.1 request", func(r *chaosRaw) error {
			_, err := io.WriteString(r.nc, "GET / HTTP/1.1\r\nHost: vigil\r\nUser-Agent: curl/8.5.0\r\n\r\n")
			return err
		}, 0xff},
		{"TLS ClientHello", func(r *chaosRaw) error {
			_, err := r.nc.Write([]byte("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + strings.Repeat("\x00", 40)))
			return err
		}, 0xff},
		{"garbage", func(r *chaosRaw) error {
			_, err := r.nc.Write([]byte("\x00\x01\x02 not HTTP/2 at all \xff\xfe\xfd" + strings.Repeat("x", 64)))
			return err
		}, 0xff},
		{"preface with a wrong tail", func(r *chaosRaw) error {
			_, err := io.WriteString(r.nc, "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
			return err
		}, 0xff},
		{"DATA on stream 0", func(r *chaosRaw) error {
			if err := r.handshake(); err != nil {
				return err
			}
			r.fr.AllowIllegalWrites = true
			return r.data(0, []byte("x"), false)
		}, http2.ErrCodeProtocol},
		{"SETTINGS_ENABLE_PUSH=2", func(r *chaosRaw) error {
			if _, err := r.bw.WriteString(http2.ClientPreface); err != nil {
				return err
			}
			if err := r.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2}); err != nil {
				return err
			}
			return r.bw.Flush()
		}, http2.ErrCodeProtocol},
		{"undecodable header block", func(r *chaosRaw) error {
			if err := r.handshake(); err != nil {
				return err
			}
			if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff}, EndHeaders: true}); err != nil {
				return err
			}
			return r.bw.Flush()
		}, http2.ErrCodeCompression},
		{"CONTINUATION flood", func(r *chaosRaw) error {
			if err := r.handshake(); err != nil {
				return err
			}
			r.hbuf.Reset()
			for _, f := range grpcRequest("/grpc.testing.TestService/UnaryCall") {
				_ = r.henc.WriteField(f)
			}
			if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.hbuf.Bytes()}); err != nil {
				return err
			}
			// 64 MiB of header block, never ended, unless vigil stops it.
			junk := make([]byte, 16<<10)
			for i := range junk {
				junk[i] = 'a' // literal bytes that keep the decoder busy
			}
			for range 4096 {
				if err := r.fr.WriteContinuation(1, false, junk); err != nil {
					return nil // vigil closed the connection: that is the point
				}
			}
			return r.bw.Flush()
		}, http2.ErrCodeProtocol},
	}
	var outcomes []string
	during, errs := c.probe.during(time.Second, func() {
		for _, tt := range tests {
			r := dialChaosRaw(t, c.api)
			if err := tt.send(r); err != nil && !isClosedErr(err) {
				t.Errorf("%s: send: %v", tt.name, err)
				continue
			}
			out := r.readUntilClosed(5 * time.Second)
			_ = r.nc.Close()
			var err error
			switch {
			case !out.Closed:
				err = fmt.Errorf("%s: connection still open after %v", tt.name, out.After)
			case out.After > 3*time.Second:
				err = fmt.Errorf("%s: closed only after %v; want at once", tt.name, out.After)
			case tt.goAway != 0xff && (out.GoAway == nil || out.GoAway.ErrCode != tt.goAway):
				err = fmt.Errorf("%s: GOAWAY %v; want %v", tt.name, out.GoAway, tt.goAway)
			}
			if err != nil {
				t.Error(err)
			}
			got := "closed, no GOAWAY"
			if out.GoAway != nil {
				got = "GOAWAY " + out.GoAway.ErrCode.String()
			}
			if !out.Closed {
				got = "still open"
			}
			outcomes = append(outcomes, tt.name+": "+got+" after "+out.After.Round(time.Millisecond).String())
		}
	})
	t.Logf("malformed input:\n  %s", strings.Join(outcomes, "\n  "))
	requireLatency(t, "malformed input", before, during, errs)
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after malformed input")
}

func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// TestChaosClientOversized sends header lists and messages over vigil's
// limits (1 MiB of headers; max_message_size, here 1 MiB): each is refused
// with the right error, nothing oversized reaches a backend, and vigil
// keeps serving.
func TestChaosClientOversized(t *testing.T) {
	t.Parallel()
	c := newChaosClients(t, "max_message_size: 1MiB")
	baseline, before := c.settleBaseline(t)
	arrived := func(id string) bool { return c.bs[0].arrived(id) || c.bs[1].arrived(id) }

	during, errs := c.probe.during(time.Second, func() {
		conn := dialClientOpts(t, c.api, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
		defer conn.Close()
		tc := testgrpc.NewTestServiceClient(conn)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		// A request message over the limit: refused by vigil, never sent.
		_, err := tc.UnaryCall(chaosCtx(ctx, "big-request"), &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 2<<20)}})
		if codeOf(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "request message") {
			t.Errorf("2 MiB request through a 1 MiB listener: %v; want RESOURCE_EXHAUSTED from vigil", err)
		}
		if arrived("big-request") {
			t.Errorf("the oversized request reached a backend")
		}
		t.Logf("oversized request: %v", err)
		// A response over the limit: cut by vigil.
		_, err = tc.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: 2 << 20})
		if codeOf(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "response message") {
			t.Errorf("2 MiB response through a 1 MiB listener: %v; want RESOURCE_EXHAUSTED from vigil", err)
		}
		t.Logf("oversized response: %v", err)
		// Just under the limit passes.
		if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 1<<20-64)}, ResponseSize: 1<<20 - 64}); err != nil {
			t.Errorf("a message just under the limit: %v", err)
		}

		// A length prefix that lies: 1 GiB announced, a few bytes sent.
		r := dialChaosRaw(t, c.api)
		defer r.nc.Close()
		if err := r.handshake(); err != nil {
			t.Fatal(err)
		}
		if err := r.headers(1, grpcRequest("/grpc.testing.TestService/UnaryCall", hpack.HeaderField{Name: chaosIDKey, Value: "lying-prefix"}), false); err != nil {
			t.Fatal(err)
		}
		if err := r.data(1, []byte{0, 0x40, 0, 0, 0, 1, 2, 3}, false); err != nil {
			t.Fatal(err)
		}
		out := r.readUntilClosedOr(10*time.Second, func(o rawOutcome) bool { return o.Statuses[1] != "" || o.Resets[1] != 0 })
		if out.Statuses[1] != "8" { // RESOURCE_EXHAUSTED
			t.Errorf("a 1 GiB length prefix: %+v; want grpc-status 8 on stream 1", out)
		}
		t.Logf("a 1 GiB length prefix: grpc-status %s", out.Statuses[1])
		_ = r.nc.Close()

		// A header list just over 1 MiB (131 headers of 8 KB each, as
		// HTTP/2 counts them: name, value and 32 bytes), its last header in
		// the last CONTINUATION frame: vigil must not forward what it had
		// to cut (here, an authorization header).
		r = dialChaosRaw(t, c.api)
		defer r.nc.Close()
		if err := r.handshake(); err != nil {
			t.Fatal(err)
		}
		big := []hpack.HeaderField{{Name: chaosIDKey, Value: "truncated-headers"}}
		for i := range 131 {
			big = append(big, hpack.HeaderField{Name: "x-big-" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Value: strings.Repeat("v", 8000)})
		}
		big = append(big, hpack.HeaderField{Name: "authorization", Value: "Bearer the-last-header"})
		if err := r.headers(1, grpcRequest("/grpc.testing.TestService/UnaryCall", big...), false); err != nil {
			t.Fatal(err)
		}
		_ = r.data(1, grpcMessage(t, &testgrpc.SimpleRequest{}), true)
		out = r.readUntilClosedOr(10*time.Second, func(o rawOutcome) bool { return o.Statuses[1] != "" || o.Resets[1] != 0 || o.GoAway != nil })
		md, forwarded := c.bs[0].metadataOf("truncated-headers")
		if !forwarded {
			md, forwarded = c.bs[1].metadataOf("truncated-headers")
		}
		t.Logf("a header list just over 1 MiB: grpc-status %q, reset %v, GOAWAY %v, forwarded to a backend: %v", out.Statuses[1], out.Resets[1], out.GoAway, forwarded)
		switch {
		case forwarded && len(md.Get("authorization")) == 0:
			t.Errorf("a header list over vigil's 1 MiB limit was forwarded to a backend without its last header (grpc-status %q)", out.Statuses[1])
		case forwarded:
			t.Errorf("the header list was forwarded whole: it is not over the limit, the test is wrong")
		case out.Statuses[1] != "8" && out.GoAway == nil:
			t.Errorf("a header list over the limit: grpc-status %q, GOAWAY %v; want RESOURCE_EXHAUSTED or a GOAWAY", out.Statuses[1], out.GoAway)
		}
		_ = r.nc.Close()

		// A header list of 8 MiB: refused, the connection closed.
		r = dialChaosRaw(t, c.api)
		defer r.nc.Close()
		if err := r.handshake(); err != nil {
			t.Fatal(err)
		}
		big = big[:0]
		for i := range 1024 {
			big = append(big, hpack.HeaderField{Name: "x-huge-" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676)), Value: strings.Repeat("v", 8000)})
		}
		_ = r.headers(1, grpcRequest("/grpc.testing.TestService/UnaryCall", big...), true)
		out = r.readUntilClosed(10 * time.Second)
		if !out.Closed || out.GoAway == nil {
			t.Errorf("an 8 MiB header list: %+v; want GOAWAY and the connection closed", out)
		} else {
			t.Logf("an 8 MiB header list: GOAWAY %v, connection closed", out.GoAway.ErrCode)
		}
	})
	requireLatency(t, "oversized input", before, during, errs)
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after oversized input")
}

func dialClientOpts(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// TestChaosClientThousandsOfStreams holds 4,000 bidi streams open at once
// through vigil (four connections at the listener's limit of 1,000
// concurrent streams each), while a well-behaved client is served; a raw
// client that ignores the limit gets the excess refused.
func TestChaosClientThousandsOfStreams(t *testing.T) {
	t.Parallel()
	c := newChaosClients(t, "max_concurrent_streams: 1000")
	baseline, before := c.settleBaseline(t)

	const conns, perConn = 4, 1000
	var opened, failed atomic.Int64
	var firstErr atomic.Value
	release := make(chan struct{})
	releaseAll := sync.OnceFunc(func() { close(release) })
	var wg sync.WaitGroup
	var clientConns []*grpc.ClientConn
	defer func() {
		for _, cc := range clientConns {
			_ = cc.Close()
		}
	}()
	defer releaseAll()
	// While the streams are being opened (the test process, backends
	// included, is busy opening 4,000 streams: reported, not held to the
	// bound), then while they are held open.
	opening, openErrs := c.probe.during(time.Second, func() {
		for range conns {
			cc := dialClientOpts(t, c.api)
			clientConns = append(clientConns, cc)
			tc := testgrpc.NewTestServiceClient(cc)
			for range perConn {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					err := func() error {
						stream, err := tc.FullDuplexCall(ctx)
						if err != nil {
							return err
						}
						req := &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 32}}}
						if err := stream.Send(req); err != nil {
							return err
						}
						if _, err := stream.Recv(); err != nil {
							return err
						}
						opened.Add(1)
						<-release
						if err := stream.CloseSend(); err != nil {
							return err
						}
						if _, err := stream.Recv(); err != io.EOF {
							return err
						}
						return nil
					}()
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						opened.Add(1) // counted, so the wait below ends
					}
				})
			}
		}
		eventually(t, 60*time.Second, func() bool { return opened.Load() == conns*perConn }, "%d streams open (%d so far)", conns*perConn, opened.Load())
	})
	t.Logf("4,000 streams: well-behaved client while they were being opened: %v (%d failed)", opening, len(openErrs))
	during, errs := c.probe.during(time.Second, func() {
		open := chaosGauge(t, c.admin, "vigil_listener_active_streams", `listener="api"`)
		t.Logf("%d streams open at once through vigil (vigil_listener_active_streams %v; backends: %d and %d calls)",
			conns*perConn-int(failed.Load()), open, c.bs[0].active.Load(), c.bs[1].active.Load())

		// A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS.
		r := dialChaosRaw(t, c.api)
		if err := r.handshake(); err != nil {
			t.Fatal(err)
		}
		for i := range 1100 {
			if err := r.headers(uint32(2*i+1), grpcRequest("/grpc.testing.TestService/FullDuplexCall"), false); err != nil {
				t.Fatal(err)
			}
		}
		out := r.readUntilClosedOr(20*time.Second, func(o rawOutcome) bool { return len(o.Resets) >= 100 })
		refused := 0
		for _, code := range out.Resets {
			if code == http2.ErrCodeRefusedStream {
				refused++
			}
		}
		if refused != 100 {
			t.Errorf("1,100 streams opened on a connection with a limit of 1,000: %d refused (resets %d, GOAWAY %v); want 100 REFUSED_STREAM", refused, len(out.Resets), out.GoAway)
		}
		t.Logf("a client opening 1,100 streams over the limit of 1,000: %d refused with REFUSED_STREAM", refused)
		_ = r.nc.Close()
	})
	releaseAll()
	wg.Wait()
	if len(openErrs) > 0 {
		t.Errorf("%d calls of the well-behaved client failed while the streams were being opened; first: %v", len(openErrs), openErrs[0])
	}
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d streams failed; first: %v", n, conns*perConn, firstErr.Load())
	}
	requireLatency(t, "4,000 streams", before, during, errs)
	for _, cc := range clientConns {
		_ = cc.Close()
	}
	c.backendsIdle(t)
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after 4,000 streams")
}

// TestChaosClientCancelsEverything has clients cancel every call in the
// middle: bidi streams after their first answer, server streams after two
// of a hundred messages, unary calls as soon as sent; and one raw client
// resetting streams as fast as it opens them. Every backend call is
// cancelled in turn, nothing stays in flight, the resetting client is told
// to calm down, and a well-behaved client is served throughout.
func TestChaosClientCancelsEverything(t *testing.T) {
	t.Parallel()
	c := newChaosClients(t, "")
	baseline, before := c.settleBaseline(t)

	var cancelled, completed atomic.Int64
	during, errs := c.probe.during(3*time.Second, func() {
		ctx, stop := context.WithTimeout(context.Background(), 3*time.Second)
		defer stop()
		var wg sync.WaitGroup
		for i := range 4 {
			cc := dialClientOpts(t, c.api)
			defer cc.Close()
			tc := testgrpc.NewTestServiceClient(cc)
			wg.Go(func() {
				for ctx.Err() == nil {
					callCtx, cancel := context.WithCancel(ctx)
					var err error
					switch i % 3 {
					case 0:
						var s testgrpc.TestService_FullDuplexCallClient
						if s, err = tc.FullDuplexCall(callCtx); err == nil {
							if err = s.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{{Size: 16 << 10}}, Payload: &testgrpc.Payload{Body: make([]byte, 16<<10)}}); err == nil {
								_, err = s.Recv()
							}
						}
					case 1:
						var s testgrpc.TestService_StreamingOutputCallClient
						params := make([]*testgrpc.ResponseParameters, 100)
						for j := range params {
							params[j] = &testgrpc.ResponseParameters{Size: 16 << 10}
						}
						if s, err = tc.StreamingOutputCall(callCtx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: params}); err == nil {
							if _, err = s.Recv(); err == nil {
								_, err = s.Recv()
							}
						}
					case 2:
						go func() { time.Sleep(time.Millisecond); cancel() }()
						_, err = tc.UnaryCall(callCtx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, 64<<10)}, ResponseSize: 64 << 10})
					}
					cancel()
					if err == nil {
						completed.Add(1)
					} else {
						cancelled.Add(1)
					}
					time.Sleep(time.Millisecond)
				}
			})
		}
		// Rapid reset: open and reset at once, as fast as possible.
		r := dialChaosRaw(t, c.api)
		defer r.nc.Close()
		if err := r.handshake(); err != nil {
			t.Fatal(err)
		}
		resets := 0
		for i := range 3000 {
			id := uint32(2*i + 1)
			if r.headers(id, grpcRequest("/grpc.testing.TestService/FullDuplexCall"), false) != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil || r.bw.Flush() != nil {
				break
			}
			resets++
		}
		out := r.readUntilClosed(10 * time.Second)
		if out.GoAway == nil || out.GoAway.ErrCode != http2.ErrCodeEnhanceYourCalm || !out.Closed {
			t.Errorf("a rapid-reset client (%d streams reset): %+v; want GOAWAY ENHANCE_YOUR_CALM and the connection closed", resets, out)
		}
		t.Logf("rapid reset: GOAWAY %v after %d streams opened and reset", out.GoAway, resets)
		wg.Wait()
	})
	t.Logf("cancelling clients: %d calls cancelled mid-way, %d completed before their cancel", cancelled.Load(), completed.Load())
	requireLatency(t, "cancelled calls", before, during, errs)
	c.backendsIdle(t)
	eventually(t, 20*time.Second, func() bool {
		return chaosGauge(t, c.admin, "vigil_listener_active_streams", `listener="api"`) == 0
	}, "no stream left in flight in vigil")
	chaosRequireBaseline(t, c.v, c.admin, baseline, "after cancelled calls")
}
