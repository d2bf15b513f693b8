package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The system's resolver configuration, used when a Spec names no resolver:
// names in the hosts file first, as the C library does by default, then the
// servers and search domains of resolv.conf.
const (
	resolvConf = "/etc/resolv.conf"
	hostsFile  = "/etc/hosts"
)

// Query limits. A lookup gives each server queryTimeout per attempt and
// makes queryAttempts rounds over the servers before it fails, so a lost
// UDP packet is retried rather than reported.
const (
	queryTimeout  = 2 * time.Second
	queryAttempts = 2
	// udpSize is the EDNS0 buffer size offered: the size DNS flag day 2020
	// settled on, which no path fragments. Bigger answers come over TCP.
	udpSize = 1232
)

// dnsClient asks DNS servers questions, with the servers and search list
// of either a Spec's resolver or /etc/resolv.conf.
type dnsClient struct {
	servers []string // host:port
	// conf expands a name into the names to try (search domains, ndots);
	// nil when names are taken as absolute (an explicit resolver).
	conf     *dns.ClientConfig
	timeout  time.Duration
	attempts int
	udp, tcp *dns.Client
	// hosts is the hosts file to consult first; "" for none (an explicit
	// resolver).
	hosts string
}

// newDNSClient returns a client for resolver (host:port), or for the
// system's configuration when resolver is "".
func newDNSClient(resolver string) (*dnsClient, error) {
	c := &dnsClient{
		timeout:  queryTimeout,
		attempts: queryAttempts,
		udp:      &dns.Client{Net: "udp", UDPSize: udpSize},
		tcp:      &dns.Client{Net: "tcp"},
	}
	if resolver != "" {
		c.servers = []string{resolver}
		return c, nil
	}
	conf, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read %s: %w", resolvConf, err)
		}
		// As the C library does without a resolv.conf: the local server.
		conf = &dns.ClientConfig{Servers: []string{"127.0.0.1", "::1"}, Port: "53", Ndots: 1}
	}
	for _, s := range conf.Servers {
		c.servers = append(c.servers, net.JoinHostPort(s, conf.Port))
	}
	if len(c.servers) == 0 {
		return nil, fmt.Errorf("%s lists no nameserver", resolvConf)
	}
	if conf.Timeout > 0 {
		c.timeout = min(time.Duration(conf.Timeout)*time.Second, queryTimeout)
	}
	if conf.Attempts > 0 {
		c.attempts = min(conf.Attempts, queryAttempts)
	}
	c.conf = conf
	c.hosts = hostsFile
	return c, nil
}

// lookupHostsFile returns the addresses the hosts file gives name, read
// anew each time (it is small, and edits take effect at the next refresh).
func lookupHostsFile(path, name string) []netip.Addr {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	name = strings.TrimSuffix(name, ".")
	var addrs []netip.Addr
	for line := range strings.Lines(string(data)) {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		ip, err := netip.ParseAddr(fields[0])
		if err != nil || ip.Zone() != "" {
			continue
		}
		for _, h := range fields[1:] {
			if strings.EqualFold(strings.TrimSuffix(h, "."), name) {
				addrs = append(addrs, ip.Unmap())
				break
			}
		}
	}
	return addrs
}

// names is the list of fully qualified names to try for name, in order.
func (c *dnsClient) names(name string) []string {
	if c.conf == nil {
		return []string{dns.Fqdn(name)}
	}
	return c.conf.NameList(name)
}

// LookupError is a DNS question that got no usable answer: the servers
// failed (SERVFAIL, REFUSED, ...), or could not be reached in time.
// NXDOMAIN and empty answers are not errors: they are answers.
type LookupError struct {
	// Name is the fully qualified name asked about, Type its record type
	// ("A", "AAAA", "SRV").
	Name, Type string
	// Server is the last server asked (host:port).
	Server string
	// Rcode is the response code the server answered (dns.RcodeServerFailure,
	// ...), or -1 when no answer came.
	Rcode int
	// Err is the transport error when no answer came.
	Err error
}

func (e *LookupError) Error() string {
	what := fmt.Sprintf("lookup %s %s: server %s", e.Type, e.Name, e.Server)
	if e.Rcode >= 0 {
		return what + " answered " + dns.RcodeToString[e.Rcode]
	}
	return what + ": " + e.Err.Error()
}

func (e *LookupError) Unwrap() error { return e.Err }

// Timeout reports whether no server answered in time.
func (e *LookupError) Timeout() bool {
	var ne net.Error
	return e.Rcode < 0 && errors.As(e.Err, &ne) && ne.Timeout()
}

// answer is what a server said about one name and type.
type answer struct {
	records []dns.RR // of the type asked, from the answer section
	// nxdomain: the name does not exist.
	nxdomain bool
	// ttl is the smallest TTL of records, or the negative-caching TTL of an
	// empty answer (from its SOA), in seconds; 0 if none was given.
	ttl uint32
}

// query asks about one fully qualified name and type, trying each server in
// turn, attempts times, until one gives an answer (NOERROR or NXDOMAIN).
func (c *dnsClient) query(ctx context.Context, name string, qtype uint16) (answer, error) {
	msg := new(dns.Msg)
	msg.SetQuestion(name, qtype)
	msg.SetEdns0(udpSize, false)
	lerr := &LookupError{Name: name, Type: dns.TypeToString[qtype], Rcode: -1}
	for range c.attempts {
		for _, server := range c.servers {
			if err := ctx.Err(); err != nil {
				return answer{}, err
			}
			lerr.Server = server
			resp, err := c.exchange(ctx, msg, server)
			if err != nil {
				lerr.Rcode, lerr.Err = -1, err
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return parseAnswer(resp, qtype), nil
			}
			lerr.Rcode, lerr.Err = resp.Rcode, nil
		}
	}
	return answer{}, lerr
}

// exchange sends msg over UDP, and again over TCP when the answer was
// truncated.
func (c *dnsClient) exchange(ctx context.Context, msg *dns.Msg, server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, _, err := c.udp.ExchangeContext(ctx, msg, server)
	if err == nil && resp.Truncated {
		resp, _, err = c.tcp.ExchangeContext(ctx, msg, server)
	}
	if err != nil {
		return nil, err
	}
	if resp.Id != msg.Id || len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, msg.Question[0].Name) {
		return nil, errors.New("answer does not match the question")
	}
	return resp, nil
}

func parseAnswer(resp *dns.Msg, qtype uint16) answer {
	a := answer{nxdomain: resp.Rcode == dns.RcodeNameError}
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype != qtype || h.Class != dns.ClassINET {
			continue // CNAMEs on the way, DNSSEC signatures
		}
		a.records = append(a.records, rr)
		if a.ttl == 0 || h.Ttl < a.ttl {
			a.ttl = max(h.Ttl, 1)
		}
	}
	if len(a.records) == 0 {
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				a.ttl = max(min(soa.Hdr.Ttl, soa.Minttl), 1) // RFC 2308
			}
		}
	}
	return a
}
