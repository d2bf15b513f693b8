package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// Store holds vigil's state. It is safe for concurrent use: memdb allows any
// number of readers and one writer at a time.
type Store struct {
	db *memdb.MemDB

	// eventsKept bounds the events table; older events are deleted as new
	// ones are appended.
	eventsKept int
}

// DefaultEventsKept is how many recent events a Store keeps for replay.
const DefaultEventsKept = 1024

// New returns an empty store.
func New() (*Store, error) {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return nil, fmt.Errorf("create state store: %w", err)
	}
	return &Store{db: db, eventsKept: DefaultEventsKept}, nil
}

// Txn is a read-only view of the store at one instant. Reads through one Txn
// are consistent with each other.
type Txn struct {
	txn *memdb.Txn
}

// Snapshot returns a read-only view of the store as it is now.
func (s *Store) Snapshot() Txn { return Txn{txn: s.db.Txn(false)} }

// Writer changes the store inside one transaction; it reads what the
// transaction has written so far.
type Writer struct {
	Txn
}

// Update runs fn in one write transaction, committed when fn returns nil and
// discarded otherwise: readers see all of fn's changes or none of them.
func (s *Store) Update(fn func(w Writer) error) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	if err := fn(Writer{Txn{txn: txn}}); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// addWatch adds ch to ws when ws is not nil.
func addWatch(ws memdb.WatchSet, ch <-chan struct{}) {
	if ws != nil {
		ws.Add(ch)
	}
}
