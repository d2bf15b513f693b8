package dnstest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ask(t *testing.T, s *Server, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Timeout: 300 * time.Millisecond}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(name, qtype), s.Addr)
	return r, err
}

func TestServer(t *testing.T) {
	s := Start(t, A("a", 30, "127.0.0.2"), SRV("_x._tcp", 30, 0, 1, 80, Name("a")))
	for _, tt := range []struct {
		name  string
		qtype uint16
		rcode int
		n     int
	}{
		{Name("a"), dns.TypeA, dns.RcodeSuccess, 1},
		{Name("_x._tcp"), dns.TypeSRV, dns.RcodeSuccess, 1},
		{Name("b"), dns.TypeA, dns.RcodeNameError, 0},
		{ServfailName, dns.TypeA, dns.RcodeServerFailure, 0},
		{RefusedName, dns.TypeA, dns.RcodeRefused, 0},
	} {
		r, err := ask(t, s, tt.name, tt.qtype)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if r.Rcode != tt.rcode || len(r.Answer) != tt.n {
			t.Errorf("%s: rcode %s, %d answers; want %s, %d", tt.name, dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tt.rcode], tt.n)
		}
	}

	s.Set(A("b", 30, "127.0.0.3"))
	if r, _ := ask(t, s, Name("a"), dns.TypeA); r == nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("after Set, a: %v", r)
	}
	if r, _ := ask(t, s, Name("b"), dns.TypeA); r == nil || len(r.Answer) != 1 {
		t.Errorf("after Set, b: %v", r)
	}

	s.Pause()
	if _, err := ask(t, s, Name("b"), dns.TypeA); err == nil {
		t.Error("a paused server answered")
	}
	s.Resume()
	s.Stop()
	if _, err := ask(t, s, Name("b"), dns.TypeA); err == nil {
		t.Error("a stopped server answered")
	}
	s.Restart()
	if r, err := ask(t, s, Name("b"), dns.TypeA); err != nil || len(r.Answer) != 1 {
		t.Errorf("after Restart: %v %v", r, err)
	}
}
