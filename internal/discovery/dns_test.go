package discovery

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/vigil-proxy/vigil/internal/dnstest"
)

func dnsSpec(srv *dnstest.Server, kind Kind, name string, port uint16) Spec {
	return Spec{Kind: kind, Name: name, Port: port, Refresh: time.Second, Resolver: srv.Addr}
}

func lookupOnce(t *testing.T, spec Spec) ([]Endpoint, time.Duration, error) {
	t.Helper()
	src, err := newDNSSource(spec)
	if err != nil {
		t.Fatal(err)
	}
	src.client.timeout = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return src.lookup(ctx)
}

func eps(addrs ...string) []Endpoint {
	out := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = Endpoint{Address: a, Weight: 1}
	}
	return out
}

func TestLookupDNS(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t,
		dnstest.A("both", 30, "127.0.0.3"),
		dnstest.A("both", 30, "127.0.0.2"),
		dnstest.AAAA("both", 7, "::1"),
		dnstest.A("v4", 60, "127.0.0.9"),
		dnstest.AAAA("v6only", 60, "::1"),
		dnstest.A("dup", 60, "127.0.0.2"),
		"alias 60 IN CNAME v4",
		`txt 60 IN TXT "no address"`,
	)
	tests := []struct {
		name string
		want []Endpoint
		ttl  time.Duration
	}{
		{"both", eps("127.0.0.2:50051", "127.0.0.3:50051", "[::1]:50051"), 7 * time.Second},
		{"v4", eps("127.0.0.9:50051"), 60 * time.Second},
		{"v6only", eps("[::1]:50051"), 60 * time.Second},
		{"alias", eps("127.0.0.9:50051"), 60 * time.Second},
		// An authoritative empty answer is an empty set, not an error.
		{"missing", []Endpoint{}, time.Second}, // NXDOMAIN; the SOA's negative TTL
		{"txt", []Endpoint{}, time.Second},     // exists, with neither A nor AAAA
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, ttl, err := lookupOnce(t, dnsSpec(srv, KindDNS, dnstest.Name(tt.name), 50051))
			if err != nil {
				t.Fatal(err)
			}
			if len(set) != 0 || len(tt.want) != 0 {
				if !slices.Equal(set, tt.want) {
					t.Errorf("set = %v, want %v", set, tt.want)
				}
			}
			if tt.ttl != 0 && ttl != tt.ttl {
				t.Errorf("ttl = %v, want %v", ttl, tt.ttl)
			}
		})
	}
}

func TestLookupSRV(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t,
		dnstest.SRV("_grpc._tcp.orders", 30, 0, 5, 50051, dnstest.Name("a")),
		dnstest.SRV("_grpc._tcp.orders", 30, 0, 0, 50052, dnstest.Name("b")),     // weight 0 counts as 1
		dnstest.SRV("_grpc._tcp.orders", 30, 1, 60000, 50053, dnstest.Name("a")), // clamped; priorities are no tiers
		dnstest.SRV("_grpc._tcp.orders", 30, 0, 3, 50054, dnstest.Name("gone")),  // NXDOMAIN target: no endpoint
		dnstest.A("a", 20, "127.0.0.2"),
		dnstest.AAAA("a", 20, "::1"),
		dnstest.A("b", 10, "127.0.0.3"),
		dnstest.SRV("_grpc._tcp.none", 30, 0, 0, 0, "."),
		dnstest.SRV("_grpc._tcp.broken", 30, 0, 1, 50051, dnstest.ServfailName),
	)
	set, ttl, err := lookupOnce(t, dnsSpec(srv, KindSRV, dnstest.Name("_grpc._tcp.orders"), 0))
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{
		{Address: "127.0.0.2:50051", Weight: 5},
		{Address: "127.0.0.2:50053", Weight: MaxWeight},
		{Address: "127.0.0.3:50052", Weight: 1},
		{Address: "[::1]:50051", Weight: 5},
		{Address: "[::1]:50053", Weight: MaxWeight},
	}
	if !slices.Equal(set, want) {
		t.Errorf("set = %v\nwant %v", set, want)
	}
	if ttl != 10*time.Second {
		t.Errorf("ttl = %v, want the smallest of the records', 10s", ttl)
	}

	// "." as the only target: the service is decidedly not available.
	set, _, err = lookupOnce(t, dnsSpec(srv, KindSRV, dnstest.Name("_grpc._tcp.none"), 0))
	if err != nil || len(set) != 0 {
		t.Errorf("target \".\": set %v, err %v; want an empty set", set, err)
	}
	set, _, err = lookupOnce(t, dnsSpec(srv, KindSRV, dnstest.Name("_grpc._tcp.missing"), 0))
	if err != nil || len(set) != 0 {
		t.Errorf("NXDOMAIN: set %v, err %v; want an empty set", set, err)
	}
	// A target whose lookup fails fails the whole lookup: the last good set
	// stays rather than losing that target's endpoints.
	_, _, err = lookupOnce(t, dnsSpec(srv, KindSRV, dnstest.Name("_grpc._tcp.broken"), 0))
	var lerr *LookupError
	if !errors.As(err, &lerr) || lerr.Rcode != dns.RcodeServerFailure {
		t.Errorf("failing target: err = %v, want a SERVFAIL LookupError", err)
	}
}

func TestLookupFailures(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.A("x", 30, "127.0.0.2"))
	tests := []struct {
		name    string
		rcode   int
		timeout bool
		prepare func()
	}{
		{name: dnstest.ServfailName, rcode: dns.RcodeServerFailure},
		{name: dnstest.RefusedName, rcode: dns.RcodeRefused},
		{name: dnstest.Name("x"), rcode: -1, prepare: srv.Pause, timeout: true},
		{name: dnstest.Name("x"), rcode: -1, prepare: func() { srv.Resume(); srv.Stop() }},
	}
	for _, tt := range tests {
		if tt.prepare != nil {
			tt.prepare()
		}
		_, _, err := lookupOnce(t, dnsSpec(srv, KindDNS, tt.name, 1))
		var lerr *LookupError
		if !errors.As(err, &lerr) {
			t.Fatalf("%s: err = %v, want a LookupError", tt.name, err)
		}
		if lerr.Rcode != tt.rcode || lerr.Timeout() != tt.timeout {
			t.Errorf("%s: %v: rcode %d timeout %v, want %d %v", tt.name, err, lerr.Rcode, lerr.Timeout(), tt.rcode, tt.timeout)
		}
	}
}

func TestLookupThousandAddresses(t *testing.T) {
	t.Parallel()
	var records []string
	var want []string
	for i := range 1000 {
		ip := fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)
		records = append(records, dnstest.A("big", 30, ip))
		want = append(want, ip+":8080")
	}
	srv := dnstest.Start(t, records...)
	set, _, err := lookupOnce(t, dnsSpec(srv, KindDNS, dnstest.Name("big"), 8080))
	if err != nil {
		t.Fatal(err)
	}
	// 16 KB: the UDP answer is truncated, the TCP one is whole.
	if !slices.Equal(set, eps(want...)) {
		t.Errorf("got %d endpoints, want 1000", len(set))
	}
}

// events collects a Watcher's events for a test.
type events struct {
	mu  sync.Mutex
	evs []Event
	ch  chan struct{}
}

func newEvents() *events { return &events{ch: make(chan struct{}, 1)} }

func (e *events) handle(ev Event) {
	e.mu.Lock()
	e.evs = append(e.evs, ev)
	e.mu.Unlock()
	notify(e.ch)
}

// waitFor waits until an event satisfies match and returns it, failing the
// test after a deadline. Events before it are consumed.
func (e *events) waitFor(t *testing.T, what string, match func(Event) bool) Event {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		e.mu.Lock()
		for len(e.evs) > 0 {
			ev := e.evs[0]
			e.evs = e.evs[1:]
			if match(ev) {
				e.mu.Unlock()
				return ev
			}
		}
		e.mu.Unlock()
		select {
		case <-e.ch:
		case <-deadline:
			t.Fatalf("no %s event within 15s", what)
		}
	}
}

func (e *events) drain() []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	evs := e.evs
	e.evs = nil
	return evs
}

func kindIs(k EventKind) func(Event) bool { return func(ev Event) bool { return ev.Kind == k } }

func TestWatcherDNS(t *testing.T) {
	t.Parallel()
	srv := dnstest.Start(t, dnstest.A("orders", 1, "127.0.0.2"))
	evs := newEvents()
	spec := dnsSpec(srv, KindDNS, dnstest.Name("orders"), 50051)
	spec.Refresh = 200 * time.Millisecond
	w := Start(spec, evs.handle)
	t.Cleanup(w.Stop)

	ev := evs.waitFor(t, "first update", kindIs(Updated))
	if !slices.Equal(ev.Endpoints, eps("127.0.0.2:50051")) {
		t.Fatalf("first set %v", ev.Endpoints)
	}
	evs.waitFor(t, "unchanged", kindIs(Unchanged))

	srv.Set(dnstest.A("orders", 1, "127.0.0.2"), dnstest.A("orders", 1, "127.0.0.3"))
	ev = evs.waitFor(t, "update with two", kindIs(Updated))
	if !slices.Equal(ev.Endpoints, eps("127.0.0.2:50051", "127.0.0.3:50051")) {
		t.Fatalf("set %v", ev.Endpoints)
	}

	// The server stops: one failure starts the streak, the next ones are
	// not first; the last good set is not replaced meanwhile.
	srv.Stop()
	ev = evs.waitFor(t, "failed", kindIs(Failed))
	if !ev.First || ev.Failures != 1 {
		t.Errorf("first failure: %+v", ev)
	}
	ev = evs.waitFor(t, "second failure", kindIs(Failed))
	if ev.First || ev.Failures != 2 {
		t.Errorf("second failure: %+v", ev)
	}
	srv.Restart()
	ev = evs.waitFor(t, "recovered", func(ev Event) bool { return ev.Kind == Recovered || ev.Kind == Updated })
	if ev.Kind != Recovered || ev.Failures < 2 {
		t.Fatalf("after the restart: %+v, want Recovered", ev)
	}
	if ev = evs.waitFor(t, "after recovery", func(ev Event) bool { return true }); ev.Kind != Unchanged {
		t.Errorf("after recovery: %+v, want Unchanged (same records)", ev)
	}

	// NXDOMAIN empties the set.
	srv.Set()
	ev = evs.waitFor(t, "empty update", kindIs(Updated))
	if len(ev.Endpoints) != 0 {
		t.Errorf("after NXDOMAIN: %v", ev.Endpoints)
	}
	w.Stop()
	evs.drain()
	time.Sleep(300 * time.Millisecond) // longer than a refresh: nothing may come after Stop
	if late := evs.drain(); len(late) != 0 {
		t.Errorf("events after Stop: %v", late)
	}
}

func TestNextRefresh(t *testing.T) {
	tests := []struct {
		refresh, ttl, want time.Duration
	}{
		{5 * time.Second, 0, 5 * time.Second},
		{5 * time.Second, 30 * time.Second, 5 * time.Second},
		{5 * time.Second, 2 * time.Second, 2 * time.Second},
		{5 * time.Second, time.Millisecond, MinRefresh},
	}
	for _, tt := range tests {
		if got := nextRefresh(tt.refresh, tt.ttl); got != tt.want {
			t.Errorf("nextRefresh(%v, %v) = %v, want %v", tt.refresh, tt.ttl, got, tt.want)
		}
	}
}

func TestSearchList(t *testing.T) {
	c := &dnsClient{conf: &dns.ClientConfig{Search: []string{"default.svc.cluster.local", "svc.cluster.local"}, Ndots: 5}}
	got := c.names("orders")
	want := []string{"orders.default.svc.cluster.local.", "orders.svc.cluster.local.", "orders."}
	if !slices.Equal(got, want) {
		t.Errorf("names(orders) = %v, want %v", got, want)
	}
	if got := c.names("orders.example."); !slices.Equal(got, []string{"orders.example."}) {
		t.Errorf("a fully qualified name is tried alone, got %v", got)
	}
	explicit := &dnsClient{}
	if got := explicit.names("orders"); !slices.Equal(got, []string{"orders."}) {
		t.Errorf("an explicit resolver takes names as absolute, got %v", got)
	}
}

func TestHostsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(path, []byte("127.0.0.1 localhost\n::1 localhost ip6-localhost # loopback\n\n10.0.0.5  Orders.Local orders # shop\nfe80::1%eth0 orders\nnot-an-ip orders\n"), 0o644)
	for _, tt := range []struct {
		name string
		want []netip.Addr
	}{
		{"localhost", []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}},
		{"orders.local.", []netip.Addr{netip.MustParseAddr("10.0.0.5")}},
		{"orders", []netip.Addr{netip.MustParseAddr("10.0.0.5")}},
		{"shop", nil},
	} {
		if got := lookupHostsFile(path, tt.name); !slices.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := lookupHostsFile("", "localhost"); got != nil {
		t.Errorf("no hosts file: %v", got)
	}
}
