package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/vigil-proxy/vigil/balancer/ringhash"
)

func TestParseHash(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`listeners:
  - {name: g, address: 127.0.0.1:0, cluster: sessions}
  - {name: t, address: 127.0.0.1:0, protocol: tcp, cluster: by-ip}
clusters:
  - name: sessions
    lb_policy: ring_hash
    hash: {header: X-Session-ID, ring_size: 1024}
    endpoints: [{address: 127.0.0.1:1}]
  - name: by-ip
    lb_policy: ring_hash
    endpoints: [{address: 127.0.0.1:2}]
  - name: plain
    endpoints: [{address: 127.0.0.1:3}]
  - name: table
    lb_policy: maglev
    hash: {header: x-user}
    endpoints: [{address: 127.0.0.1:4}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if h := cfg.Clusters[0].Hash; h == nil || h.Header != "x-session-id" || h.RingSize != 1024 {
		t.Errorf("sessions: hash %+v, want header x-session-id (lower case), ring_size 1024", h)
	}
	if h := cfg.Clusters[1].Hash; h == nil || h.Header != "" || h.RingSize != ringhash.DefaultRingSize {
		t.Errorf("by-ip (tcp only, no section): hash %+v, want the defaults", h)
	}
	if h := cfg.Clusters[2].Hash; h != nil {
		t.Errorf("round_robin cluster: hash %+v, want nil", h)
	}
	if h := cfg.Clusters[3].Hash; h == nil || h.Header != "x-user" || h.RingSize != 0 {
		t.Errorf("maglev: hash %+v, want header x-user and no ring size", h)
	}
}

func TestParseHashErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		yaml string
		want []string
	}{
		{"values", `    lb_policy: ring_hash
    hash:
      header: "x session"
      ring_size: 0
      rings: 1
`, []string{
			`10:15: clusters[0].hash.header: invalid gRPC metadata key "x session"`,
			`11:18: clusters[0].hash.ring_size: must be from 1 to 1048576, not 0`,
			`12:7: clusters[0].hash.rings: unknown field "rings"`,
		}},
		{"too large", `    lb_policy: ring_hash
    hash: {header: k, ring_size: 1048577}
`, []string{
			`9:34: clusters[0].hash.ring_size: must be from 1 to 1048576, not 1048577`,
		}},
		{"pseudo-header", `    lb_policy: ring_hash
    hash: {header: ":authority"}
`, []string{
			`9:20: clusters[0].hash.header: ":authority" is an HTTP/2 pseudo-header, not gRPC metadata`,
		}},
		{"not a string", `    lb_policy: ring_hash
    hash: {header: 12}
`, []string{
			`9:20: clusters[0].hash.header: must be a string`,
		}},
		{"grpc listener, no header", `    lb_policy: ring_hash
    hash: {ring_size: 64}
`, []string{
			`9:11: clusters[0].hash.header: required: grpc listener "l" forwards to this ring_hash cluster`,
		}},
		{"grpc listener, no section", `    lb_policy: ring_hash
`, []string{
			`8:16: clusters[0].hash.header: required: grpc listener "l" forwards to this ring_hash cluster`,
		}},
		{"hash without ring_hash", `    lb_policy: random
    hash: {header: k}
`, []string{
			`9:11: clusters[0].hash: only for lb_policy ring_hash or maglev, not random`,
		}},
		{"hash with the default policy", `    hash: {header: k}
`, []string{
			`8:11: clusters[0].hash: only for lb_policy ring_hash or maglev (the default is round_robin)`,
		}},
		{"maglev: no ring_size, header required", `    lb_policy: maglev
    hash: {ring_size: 64}
`, []string{
			`9:11: clusters[0].hash.header: required: grpc listener "l" forwards to this maglev cluster`,
			`9:12: clusters[0].hash.ring_size: only for lb_policy ring_hash (maglev's table has 65537 entries)`,
		}},
		{"not a mapping", `    lb_policy: ring_hash
    hash: x-session-id
`, []string{
			`9:11: clusters[0].hash: must be a mapping`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", trafficConfig(tt.yaml))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("err = %v, want an ErrorList", err)
			}
			var got []string
			for _, e := range list {
				got = append(got, strings.TrimPrefix(e.Error(), "t.yaml:"))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("error %d:\n got %s\nwant %s", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestHashHeaderCheckedOnReload: the Parser, which reuses the items of a
// file that did not change, still finds a grpc listener that now forwards
// to a ring_hash cluster without a header, at the cluster's shifted line.
func TestHashHeaderCheckedOnReload(t *testing.T) {
	tcp := `listeners:
  - {name: t, address: 127.0.0.1:0, protocol: tcp, cluster: c}
clusters:
  - name: c
    lb_policy: ring_hash
    endpoints: [{address: 127.0.0.1:1}]
`
	var p Parser
	if _, err := p.Parse("t.yaml", []byte(tcp)); err != nil {
		t.Fatal(err)
	}
	grpc := strings.Replace(tcp, "protocol: tcp", "protocol: grpc", 1)
	grpc = strings.Replace(grpc, "clusters:\n", "clusters:\n  # sessions\n", 1)
	_, err := p.Parse("t.yaml", []byte(grpc))
	if err == nil || !strings.Contains(err.Error(), `t.yaml:6:16: clusters[0].hash.header: required: grpc listener "t"`) {
		t.Fatalf("err = %v, want the missing header at 6:16", err)
	}
}
