package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/vigil-proxy/vigil/checker"
)

// Cluster is a cluster's settings and balancer state. Its endpoints are rows
// of their own.
type Cluster struct {
	Name           string
	LBPolicy       string
	PanicThreshold int
	HealthCheck    checker.Config
	// Panic is true while fewer than PanicThreshold percent of the
	// cluster's endpoints are healthy.
	Panic bool
}

func clustersTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableClusters,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {
				Name:    "id",
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Name"},
			},
		},
	}
}

// Cluster returns the cluster called name, or nil.
func (t Txn) Cluster(ws memdb.WatchSet, name string) (*Cluster, error) {
	ch, obj, err := t.txn.FirstWatch(tableClusters, "id", name)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", name, err)
	}
	addWatch(ws, ch)
	if obj == nil {
		return nil, nil
	}
	return obj.(*Cluster), nil
}

// Clusters returns every cluster, sorted by name.
func (t Txn) Clusters(ws memdb.WatchSet) ([]*Cluster, error) {
	it, err := t.txn.Get(tableClusters, "id")
	if err != nil {
		return nil, fmt.Errorf("clusters: %w", err)
	}
	addWatch(ws, it.WatchCh())
	var out []*Cluster
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*Cluster))
	}
	return out, nil
}

// UpsertCluster inserts c or replaces the cluster of the same name. The
// store owns c afterwards: the caller must not modify it.
func (w Writer) UpsertCluster(c *Cluster) error {
	if err := w.txn.Insert(tableClusters, c); err != nil {
		return fmt.Errorf("upsert cluster %s: %w", c.Name, err)
	}
	return nil
}

// DeleteClusterByName deletes a cluster and every endpoint of it.
func (w Writer) DeleteClusterByName(name string) error {
	if _, err := w.txn.DeleteAll(tableEndpoints, "cluster", name); err != nil {
		return fmt.Errorf("delete endpoints of cluster %s: %w", name, err)
	}
	if _, err := w.txn.DeleteAll(tableClusters, "id", name); err != nil {
		return fmt.Errorf("delete cluster %s: %w", name, err)
	}
	return nil
}
