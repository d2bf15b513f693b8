package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"

	"github.com/vigil-proxy/vigil/internal/config"
)

// Listener is a listener in force.
type Listener struct {
	config.Listener
	// Bound is the address the listener's socket is bound to (differs from
	// Address when Address has port 0).
	Bound string
}

func listenersTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableListeners,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {
				Name:    "id",
				Unique:  true,
				Indexer: &memdb.StringFieldIndex{Field: "Name"},
			},
		},
	}
}

// Listeners returns every listener, sorted by name.
func (t Txn) Listeners(ws memdb.WatchSet) ([]*Listener, error) {
	it, err := t.txn.Get(tableListeners, "id")
	if err != nil {
		return nil, fmt.Errorf("listeners: %w", err)
	}
	addWatch(ws, it.WatchCh())
	var out []*Listener
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*Listener))
	}
	return out, nil
}

// UpsertListener inserts l or replaces the listener of the same name.
func (w Writer) UpsertListener(l *Listener) error {
	if err := w.txn.Insert(tableListeners, l); err != nil {
		return fmt.Errorf("upsert listener %s: %w", l.Name, err)
	}
	return nil
}

// DeleteListenerByName deletes a listener, if present.
func (w Writer) DeleteListenerByName(name string) error {
	if _, err := w.txn.DeleteAll(tableListeners, "id", name); err != nil {
		return fmt.Errorf("delete listener %s: %w", name, err)
	}
	return nil
}
