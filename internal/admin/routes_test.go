package admin

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/vigil-proxy/vigil/balancer/route"
	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/state"
)

func TestRoutes(t *testing.T) {
	s := newStore(t)
	err := s.Update(func(w state.Writer) error {
		if err := w.UpsertListener(&state.Listener{Listener: config.Listener{Name: "edge", Protocol: config.ProtocolGRPC, Cluster: "fallback", Routes: []config.Route{
			{Name: "orders", Match: route.Match{Service: "orders.v1.Orders"}, Cluster: "orders"},
			{Match: route.Match{Service: "billing.v1.Billing", Method: "Charge"}, Cluster: "billing", Timeout: 2 * time.Second},
			{Match: route.Match{Authority: "*.example.com"}, Cluster: "admin"},
		}}}); err != nil {
			return err
		}
		return w.UpsertListener(&state.Listener{Listener: config.Listener{Name: "plain", Protocol: config.ProtocolTCP, Cluster: "db"}})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, base := start(t, Options{Store: s})
	code, _, body := get(t, base+"/routes")
	if code != http.StatusOK {
		t.Fatalf("GET /routes = %d", code)
	}
	var got RoutesResponse
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	want := RoutesResponse{Listeners: []ListenerRoutes{
		{Name: "edge", Protocol: "grpc", Default: "fallback", Routes: []Route{
			{Index: 0, Name: "orders", Label: "orders", Service: "orders.v1.Orders", Cluster: "orders"},
			{Index: 1, Label: "1", Service: "billing.v1.Billing", Method: "Charge", Cluster: "billing", Timeout: "2s"},
			{Index: 2, Label: "2", Authority: "*.example.com", Cluster: "admin"},
		}},
		{Name: "plain", Protocol: "tcp", Default: "db", Routes: []Route{}},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /routes:\n%s\nwant %+v", body, want)
	}
}
