package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/vigil-proxy/vigil/balancer/pool/event"
	"github.com/vigil-proxy/vigil/checker"
)

// Endpoint is one backend of a cluster with its health.
type Endpoint struct {
	Cluster string
	Address string
	Weight  uint32
	// Source is where the endpoint comes from: config, dns, srv,
	// kubernetes.
	Source string
	// Check is the health-check mode in use for the endpoint.
	Check  checker.Mode
	Status checker.Status
	// Hint explains why an unhealthy endpoint is out, when the cause is
	// usually a mistake on the backend.
	Hint string
	// Ejection is its outlier ejection while ejected (zero otherwise);
	// Status then says unhealthy.
	Ejection event.Ejection
}

func endpointsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableEndpoints,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {
				Name:   "id",
				Unique: true,
				Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "Cluster"},
					&memdb.StringFieldIndex{Field: "Address"},
				}},
			},
			"cluster": {
				Name:    "cluster",
				Indexer: &memdb.StringFieldIndex{Field: "Cluster"},
			},
		},
	}
}

// Endpoint returns one endpoint of a cluster, or nil.
func (t Txn) Endpoint(ws memdb.WatchSet, cluster, address string) (*Endpoint, error) {
	ch, obj, err := t.txn.FirstWatch(tableEndpoints, "id", cluster, address)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s of cluster %s: %w", address, cluster, err)
	}
	addWatch(ws, ch)
	if obj == nil {
		return nil, nil
	}
	return obj.(*Endpoint), nil
}

// EndpointsByCluster returns the endpoints of one cluster, sorted by
// address. ws fires when any of them changes, or one is added or deleted.
func (t Txn) EndpointsByCluster(ws memdb.WatchSet, cluster string) ([]*Endpoint, error) {
	it, err := t.txn.Get(tableEndpoints, "cluster", cluster)
	if err != nil {
		return nil, fmt.Errorf("endpoints of cluster %s: %w", cluster, err)
	}
	addWatch(ws, it.WatchCh())
	var out []*Endpoint
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*Endpoint))
	}
	return out, nil
}

// UpsertEndpoint inserts e or replaces the endpoint with the same cluster
// and address. The store owns e afterwards.
func (w Writer) UpsertEndpoint(e *Endpoint) error {
	if err := w.txn.Insert(tableEndpoints, e); err != nil {
		return fmt.Errorf("upsert endpoint %s of cluster %s: %w", e.Address, e.Cluster, err)
	}
	return nil
}

// DeleteEndpointByAddress deletes one endpoint of a cluster, if present.
func (w Writer) DeleteEndpointByAddress(cluster, address string) error {
	if _, err := w.txn.DeleteAll(tableEndpoints, "id", cluster, address); err != nil {
		return fmt.Errorf("delete endpoint %s of cluster %s: %w", address, cluster, err)
	}
	return nil
}
