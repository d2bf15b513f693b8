package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/vigil-proxy/vigil/checker"
)

// Endpoint is one backend of a cluster with its health.
type Endpoint struct {
	Cluster string
	Address string
	Weight  uint32
	// Check is the health-check mode in force for the endpoint.
	Check  checker.Mode
	Status checker.Status
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

// SetEndpointStatus replaces the health status of an endpoint. An endpoint
// that is no longer in the store (removed by a reload while its prober
// reported) is left alone, and so is a draining one: once removed, an
// endpoint's health no longer changes.
func (s *Store) SetEndpointStatus(cluster, address string, st checker.Status) error {
	return s.Update(func(w Writer) error {
		e, err := w.Endpoint(nil, cluster, address)
		if err != nil || e == nil || e.Status.Health == checker.Draining || e.Status == st {
			return err
		}
		n := *e
		n.Status = st
		return w.UpsertEndpoint(&n)
	})
}
