package integration

import (
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

// steadyHealth is a health check that evicts a backend for what it answers
// (NOT_SERVING, at once) and not for a probe that is slow because the
// machine is loaded (CI runs every suite on 2 cores): a transient eviction
// of another backend would move keys, as it should, and fail a test that
// checks that only the one it evicts loses its keys.
const steadyHealth = "mode: check\ninterval: 100ms\ntimeout: 5s\nunhealthy_threshold: 1000\nhealthy_threshold: 1"

// keyedCall makes one UnaryCall with the metadata x-session-id: key ("" for
// none) and returns the id of the backend that served it.
func keyedCall(c *client, key string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-session-id", key)
	}
	return c.call(ctx)
}

// placeKeys sends one RPC per key, 8 at a time, and returns the backend
// that served each.
func placeKeys(t *testing.T, c *client, keys []string) []string {
	t.Helper()
	got := make([]string, len(keys))
	errs := make(chan error, 8)
	var wg sync.WaitGroup
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id, err := keyedCall(c, keys[i])
				if err != nil {
					errs <- fmt.Errorf("key %s: %w", keys[i], err)
					return
				}
				got[i] = id
			}
		}()
	}
	func() {
		defer close(next)
		for i := range keys {
			select {
			case next <- i:
			case err := <-errs:
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	return got
}

// TestRingHashGRPC runs ring_hash (at the default ring size) and maglev
// through the real binary over five grpc-go backends, hashing the metadata
// key x-session-id: the same key reaches the same backend over 1,000 RPCs;
// 10,000 keys spread within 15% of even; evicting a backend (its health
// NOT_SERVING) moves its keys and no other; readmitting it brings every
// one of them back; RPCs without the header spread over the backends.
func TestRingHashGRPC(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"ring_hash", "maglev"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			testHashPolicyGRPC(t, policy)
		})
	}
}

func testHashPolicyGRPC(t *testing.T, policy string) {
	var bs []*backend
	for i := range 5 {
		bs = append(bs, startBackend(t, fmt.Sprintf("b%d", i+1)))
	}
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "api", Cluster: "sessions"}},
		Clusters: []yamlCluster{{Name: "sessions", Policy: policy, Endpoints: addrs(bs), Health: steadyHealth, Extra: `hash:
  header: x-session-id`}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	c := dialClient(t, v.listener("api"))

	// Same key, same backend, 1,000 times.
	home, err := keyedCall(c, "user-42")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		if id, err := keyedCall(c, "user-42"); err != nil || id != home {
			t.Fatalf("RPC %d with key user-42: %q, %v; the first went to %s", i, id, err, home)
		}
	}

	// 10,000 keys over 5 backends.
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = "session-" + strconv.Itoa(i)
	}
	before := placeKeys(t, c, keys)
	counts := map[string]int{}
	for _, id := range before {
		counts[id]++
	}
	for _, b := range bs {
		if d := math.Abs(float64(counts[b.id])-2000) / 2000; d > 0.15 {
			t.Errorf("%s served %d of 10,000 keys, more than 15%% from 2,000", b.id, counts[b.id])
		}
	}
	t.Logf("10,000 keys per backend: %v", counts)

	// Evict b3: its keys go elsewhere, no other key moves.
	gone := bs[2]
	from := v.mark()
	gone.serving(false)
	v.wait(10*time.Second, from, match("endpoint evicted", "endpoint", gone.addr), "evicted "+gone.id)
	during := placeKeys(t, c, keys)
	moved := 0
	for i := range keys {
		switch {
		case before[i] == gone.id:
			if during[i] == gone.id {
				t.Fatalf("key %s still on evicted %s", keys[i], gone.id)
			}
			moved++
		case during[i] != before[i]:
			t.Errorf("key %s moved from %s to %s when %s was evicted", keys[i], before[i], during[i], gone.id)
		}
	}
	t.Logf("evicting %s moved %d keys, all of them its own", gone.id, moved)

	// Readmitted, it gets every one of its keys back.
	from = v.mark()
	gone.serving(true)
	v.wait(10*time.Second, from, match("endpoint readmitted", "endpoint", gone.addr), "readmitted "+gone.id)
	after := placeKeys(t, c, keys)
	for i := range keys {
		if after[i] != before[i] {
			t.Errorf("key %s on %s after the readmission, was on %s", keys[i], after[i], before[i])
		}
	}

	// No header: a random backend each time.
	spread := map[string]int{}
	for range 200 {
		id, err := keyedCall(c, "")
		if err != nil {
			t.Fatal(err)
		}
		spread[id]++
	}
	if len(spread) < 4 {
		t.Errorf("200 RPCs without the header reached %v, want most of the 5 backends", spread)
	}
}

// TestRingHashTCPByClientIP: a tcp listener in front of a ring_hash
// cluster places each connection by the client's IP address. Twenty
// clients at 127.0.0.2-21 (the Dialer's LocalAddr) each open five
// connections: each client's all reach one backend, and the clients
// spread over the backends.
func TestRingHashTCPByClientIP(t *testing.T) {
	t.Parallel()
	bs := []*backend{startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")}
	v := startVigil(t, yamlConfig{
		Listeners: []yamlListener{{Name: "tcp", Protocol: "tcp", Cluster: "by-ip"}},
		Clusters:  []yamlCluster{{Name: "by-ip", Policy: "ring_hash", Endpoints: addrs(bs), Health: steadyHealth}},
	}.String())
	for _, b := range bs {
		v.wait(15*time.Second, 0, match("endpoint admitted", "endpoint", b.addr), "admitted "+b.id)
	}
	addr := v.listener("tcp")
	callFrom := func(host byte) (string, error) {
		dialer := func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, host)}}
			return d.DialContext(ctx, "tcp", addr)
		}
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(dialer))
		if err != nil {
			return "", err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return (&client{conn: conn, tc: testpb.NewTestServiceClient(conn)}).call(ctx)
	}
	clients := map[string]int{}
	for host := byte(2); host <= 21; host++ {
		first, err := callFrom(host)
		if err != nil {
			t.Fatalf("client 127.0.0.%d: %v", host, err)
		}
		clients[first]++
		for range 4 {
			if id, err := callFrom(host); err != nil || id != first {
				t.Fatalf("client 127.0.0.%d: a connection to %q (%v), its first went to %s", host, id, err, first)
			}
		}
	}
	if len(clients) < 2 {
		t.Errorf("20 client addresses all reached %v", clients)
	}
	t.Logf("clients per backend: %v", clients)
}

// TestReloadSwitchesToRingHash: a reload from round_robin to ring_hash
// (and on to another header, then back) keeps the connections and streams
// of a steady load, grpc and tcp, and RPCs with a key then stick to one
// backend.
func TestReloadSwitchesToRingHash(t *testing.T) {
	t.Parallel()
	f := newReloadFixture(t)
	f.cfg.Clusters[0].Policy = "ring_hash"
	f.cfg.Clusters[0].Extra = "hash: {header: x-session-id, ring_size: 1024}"
	// A transient eviction would move a key (see steadyHealth).
	f.cfg.Clusters[0].Health = steadyHealth
	if r := f.reload(t); r.num("clusters_changed") != 1 {
		t.Errorf("reloaded record = %v", r)
	}
	c := dialClient(t, f.v.listener("api"))
	sticks := func(key string) {
		t.Helper()
		home, err := keyedCall(c, key)
		if err != nil {
			t.Fatal(err)
		}
		for range 50 {
			if id, err := keyedCall(c, key); err != nil || id != home {
				t.Fatalf("key %s: %q, %v; its first RPC went to %s", key, id, err, home)
			}
		}
	}
	sticks("user-1")
	f.settle()
	f.cfg.Clusters[0].Extra = "hash: {header: x-session-id, ring_size: 4096}"
	if r := f.reload(t); r.num("clusters_changed") != 1 {
		t.Errorf("ring_size change: reloaded record = %v", r)
	}
	sticks("user-2")
	f.settle()
	f.cfg.Clusters[0].Policy, f.cfg.Clusters[0].Extra = "round_robin", ""
	if r := f.reload(t); r.num("clusters_changed") != 1 {
		t.Errorf("back to round_robin: reloaded record = %v", r)
	}
	f.settle()
	f.load.requireClean(t)
}
