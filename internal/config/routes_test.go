package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/route"
)

const routesYAML = `listeners:
  - name: edge
    address: 127.0.0.1:0
    routes:
      - service: orders.v1.Orders
        cluster: orders
      - service: orders.v1.Orders
        method: Get
        cluster: orders
      - authority: "*.example.com"
        cluster: orders
      - authority: api.example.com
        service: billing.v1.Billing
        cluster: orders
        timeout: 250ms
      - authority: API.example.com
        cluster: orders
clusters:
  - name: orders
    endpoints: [{address: 127.0.0.1:50051}]
`

func TestRoutes(t *testing.T) {
	for _, parse := range []struct {
		name  string
		parse func(string, []byte) (*Config, error)
	}{{"Parse", Parse}, {"Parser", new(Parser).Parse}} {
		t.Run(parse.name, func(t *testing.T) {
			cfg, err := parse.parse("r.yaml", []byte(routesYAML))
			if err != nil {
				t.Fatal(err)
			}
			l := cfg.Listeners[0]
			if l.Cluster != "" || len(l.Routes) != 5 {
				t.Fatalf("listener = %+v", l)
			}
			want := []route.Match{
				{Service: "orders.v1.Orders"},
				{Service: "orders.v1.Orders", Method: "Get"},
				{Authority: "*.example.com"},
				{Service: "billing.v1.Billing", Authority: "api.example.com"},
				{Authority: "api.example.com"},
			}
			lines := []int{5, 7, 10, 12, 16}
			for i, r := range l.Routes {
				if r.Match != want[i] || r.Cluster != "orders" || r.Pos.Line != lines[i] || r.Pos.Col != 9 {
					t.Errorf("route %d = %+v, want match %+v", i, r, want[i])
				}
			}
			if l.Routes[3].Timeout != 250*time.Millisecond {
				t.Errorf("timeout = %v", l.Routes[3].Timeout)
			}
			// Warnings: routes an earlier one shadows, at the route.
			warnings := ErrorLines(cfg.Warnings)
			wantLines := []string{
				"r.yaml:7:9: listeners[0].routes[1]: warning: this route never matches: routes[0] (line 5, service orders.v1.Orders) matches everything it does, and the first match wins",
				"r.yaml:12:9: listeners[0].routes[3]: warning: this route never matches: routes[2] (line 10, authority *.example.com) matches everything it does, and the first match wins",
				"r.yaml:16:9: listeners[0].routes[4]: warning: this route never matches: routes[2] (line 10, authority *.example.com) matches everything it does, and the first match wins",
			}
			if strings.Join(warnings, "\n") != strings.Join(wantLines, "\n") {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warnings, "\n"), strings.Join(wantLines, "\n"))
			}
		})
	}
}

// TestParserShiftsRoutes moves a listener with routes down the file: the
// Parser's cached item must report the positions and warnings Parse
// does. (A '*' anywhere, as in a wildcard authority, makes the Parser
// parse the file whole: it cannot tell it from an alias by lines.)
func TestParserShiftsRoutes(t *testing.T) {
	var p Parser
	text := strings.ReplaceAll(routesYAML, `"*.example.com"`, "www.example.com")
	if _, err := p.Parse("r.yaml", []byte(text)); err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(text, "listeners:\n", "listeners:\n  - name: first\n    address: 127.0.0.1:0\n    cluster: orders\n", 1)
	got, err := p.Parse("r.yaml", []byte(moved))
	if err != nil {
		t.Fatal(err)
	}
	want, err := Parse("r.yaml", []byte(moved))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || len(got.Warnings) != 1 || got.Warnings[0].Line != 10 {
		t.Errorf("Parser:\n%+v\nParse:\n%+v", got.Listeners[1].Routes, want.Listeners[1].Routes)
	}
	if p.itemParses != 3 {
		t.Errorf("%d item parses, want 3 (the moved listener is reused, the new one parsed)", p.itemParses)
	}
}

// TestListenerSameCoversEveryField keeps Same and SameSettings up to date
// with Listener: a field added must be compared by one of them (or by
// the server's own handling, listed here).
func TestListenerSameCoversEveryField(t *testing.T) {
	base := Listener{Name: "a", Address: "127.0.0.1:1", Protocol: ProtocolGRPC, Cluster: "c", MaxConcurrentStreams: 1, MaxMessageSize: 1, IdleTimeout: 1, MaxConnections: 1}
	changes := map[string]func(l *Listener){
		"Name":                 func(l *Listener) { l.Name = "b" },
		"Address":              func(l *Listener) { l.Address = "127.0.0.1:2" },
		"Protocol":             func(l *Listener) { l.Protocol = ProtocolTCP },
		"Cluster":              func(l *Listener) { l.Cluster = "d" },
		"Routes":               func(l *Listener) { l.Routes = []Route{{Cluster: "c"}} },
		"MaxConcurrentStreams": func(l *Listener) { l.MaxConcurrentStreams = 2 },
		"MaxMessageSize":       func(l *Listener) { l.MaxMessageSize = 2 },
		"IdleTimeout":          func(l *Listener) { l.IdleTimeout = 2 },
		"MaxConnections":       func(l *Listener) { l.MaxConnections = 2 },
		"TLS":                  func(l *Listener) { l.TLS = &ListenerTLS{MinVersion: TLS13} },
		"AccessLog":            func(l *Listener) { l.AccessLog.Path = "stdout" }, // swapped in place: not in SameSettings
		"Pos":                  nil,                                               // positions are never compared
	}
	typ := reflect.TypeFor[Listener]()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		change, ok := changes[name]
		if !ok {
			t.Errorf("Listener.%s: new field: compare it in Same (and SameSettings if a change needs a new proxy), then list it here", name)
			continue
		}
		if change == nil {
			continue
		}
		l := base
		change(&l)
		if base.Same(l) {
			t.Errorf("Same misses a change of %s", name)
		}
	}
	l := base
	l.Pos = Pos{Line: 9}
	l.Routes = []Route{}
	l.AccessLog.PathPos = Pos{Line: 3}
	if !base.Same(l) || !base.SameSettings(l) {
		t.Error("positions or an empty route list make listeners differ")
	}
}
