package discovery

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// targetWorkers bounds the SRV targets resolved at once.
const targetWorkers = 16

// dnsSource resolves a dns or srv Spec. Its lookup is one refresh: a plain
// function, so tests need no ticker.
type dnsSource struct {
	spec   Spec
	client *dnsClient
}

func newDNSSource(spec Spec) (*dnsSource, error) {
	c, err := newDNSClient(spec.Resolver)
	if err != nil {
		return nil, err
	}
	return &dnsSource{spec: spec, client: c}, nil
}

// lookup resolves the spec once. It returns the complete set found and the
// smallest TTL of the records it came from (0 if none), or an error when
// any question of the lookup got no answer.
func (s *dnsSource) lookup(ctx context.Context) ([]Endpoint, time.Duration, error) {
	if s.spec.Kind == KindSRV {
		return s.lookupSRV(ctx)
	}
	addrs, ttl, err := s.lookupHost(ctx, s.spec.Name, true)
	if err != nil {
		return nil, 0, err
	}
	b := newSetBuilder(len(addrs))
	for _, a := range addrs {
		b.add(netip.AddrPortFrom(a, s.spec.Port), 1, false)
	}
	return b.set(), seconds(ttl), nil
}

// lookupHost resolves name's A and AAAA records, through the search list
// when search is set (SRV targets are absolute already). A name that does
// not exist, or has neither record, has no addresses; that is an answer.
func (s *dnsSource) lookupHost(ctx context.Context, name string, search bool) ([]netip.Addr, uint32, error) {
	names := []string{dns.Fqdn(name)}
	if search {
		if addrs := lookupHostsFile(s.client.hosts, name); len(addrs) > 0 {
			return addrs, 0, nil
		}
		names = s.client.names(name)
	}
	var negTTL uint32
	for _, fq := range names {
		var a, aaaa answer
		var errA, errAAAA error
		var wg sync.WaitGroup
		wg.Go(func() { aaaa, errAAAA = s.client.query(ctx, fq, dns.TypeAAAA) })
		a, errA = s.client.query(ctx, fq, dns.TypeA)
		wg.Wait()
		if errA != nil {
			return nil, 0, errA
		}
		if errAAAA != nil {
			return nil, 0, errAAAA
		}
		if len(a.records) == 0 && len(aaaa.records) == 0 {
			negTTL = minTTL(minTTL(negTTL, a.ttl), aaaa.ttl)
			continue // as the C library does: the next name of the search list
		}
		addrs := make([]netip.Addr, 0, len(a.records)+len(aaaa.records))
		for _, rr := range a.records {
			if ip, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
				addrs = append(addrs, ip)
			}
		}
		for _, rr := range aaaa.records {
			if ip, ok := netip.AddrFromSlice(rr.(*dns.AAAA).AAAA.To16()); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
		// The TTL of the records found: an empty AAAA answer's negative TTL
		// must not make a v4-only name refresh at the SOA's minimum.
		var ttl uint32
		if len(a.records) > 0 {
			ttl = a.ttl
		}
		if len(aaaa.records) > 0 {
			ttl = minTTL(ttl, aaaa.ttl)
		}
		return addrs, ttl, nil
	}
	return nil, negTTL, nil
}

// lookupSRV resolves the SRV records, then every target's addresses: each
// address is an endpoint on the record's port, with the record's weight.
// Priorities are not tiers here: every target is a candidate, and vigil's
// own health checks decide which take traffic.
func (s *dnsSource) lookupSRV(ctx context.Context) ([]Endpoint, time.Duration, error) {
	var srvs []*dns.SRV
	var ttl uint32
	for _, fq := range s.client.names(s.spec.Name) {
		ans, err := s.client.query(ctx, fq, dns.TypeSRV)
		if err != nil {
			return nil, 0, err
		}
		if len(ans.records) == 0 {
			ttl = minTTL(ttl, ans.ttl)
			continue
		}
		ttl = ans.ttl
		for _, rr := range ans.records {
			if srv := rr.(*dns.SRV); srv.Target != "." { // "." : decidedly not available (RFC 2782)
				srvs = append(srvs, srv)
			}
		}
		break
	}

	// Each target once, however many records name it.
	type resolved struct {
		addrs []netip.Addr
		ttl   uint32
		err   error
	}
	targets := make(map[string]*resolved, len(srvs))
	var order []string
	for _, srv := range srvs {
		key := dns.CanonicalName(srv.Target)
		if _, ok := targets[key]; !ok {
			targets[key] = &resolved{}
			order = append(order, key)
		}
	}
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(targetWorkers, len(order)) {
		wg.Go(func() {
			for t := range work {
				r := targets[t]
				r.addrs, r.ttl, r.err = s.lookupHost(ctx, t, false)
			}
		})
	}
	for _, t := range order {
		work <- t
	}
	close(work)
	wg.Wait()

	n := 0
	for _, t := range order {
		r := targets[t]
		if r.err != nil {
			return nil, 0, fmt.Errorf("srv %s target %s: %w", s.spec.Name, t, r.err)
		}
		if len(r.addrs) > 0 { // a target with no address has no TTL to honour
			ttl = minTTL(ttl, r.ttl)
		}
		n += len(r.addrs)
	}
	b := newSetBuilder(n)
	for _, srv := range srvs {
		for _, a := range targets[dns.CanonicalName(srv.Target)].addrs {
			b.add(netip.AddrPortFrom(a, srv.Port), uint32(srv.Weight), false)
		}
	}
	return b.set(), seconds(ttl), nil
}

// minTTL is the smaller of two TTLs, where 0 means none.
func minTTL(a, b uint32) uint32 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}

func seconds(ttl uint32) time.Duration { return time.Duration(ttl) * time.Second }

// nextRefresh is how long after a lookup the next one starts: refresh, or
// the answer's TTL when that is shorter (records expire then), never less
// than MinRefresh.
func nextRefresh(refresh, ttl time.Duration) time.Duration {
	if ttl > 0 && ttl < refresh {
		return max(ttl, MinRefresh)
	}
	return refresh
}
