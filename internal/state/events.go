package state

import (
	"fmt"
	"log/slog"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// Event is one eviction-log record (an endpoint admitted, evicted, ...),
// kept so that the admin API can stream and replay them.
type Event struct {
	// Seq numbers events from 1 in the order they were appended.
	Seq   uint64
	Time  time.Time
	Level slog.Level
	Msg   string
	// Attrs are the record's attributes, resolved, in order.
	Attrs []slog.Attr
}

func eventsTable() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableEvents,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {
				Name:    "id",
				Unique:  true,
				Indexer: &memdb.UintFieldIndex{Field: "Seq"},
			},
		},
	}
}

// AppendEvent numbers e, stores it, and drops the oldest event once more
// than the store keeps are held. The store owns e afterwards.
func (s *Store) AppendEvent(e *Event) (uint64, error) {
	err := s.Update(func(w Writer) error {
		last, err := w.txn.Last(tableEvents, "id")
		if err != nil {
			return fmt.Errorf("last event: %w", err)
		}
		e.Seq = 1
		if last != nil {
			e.Seq = last.(*Event).Seq + 1
		}
		if err := w.txn.Insert(tableEvents, e); err != nil {
			return fmt.Errorf("append event: %w", err)
		}
		first, err := w.txn.First(tableEvents, "id")
		if err != nil {
			return fmt.Errorf("first event: %w", err)
		}
		if f := first.(*Event); e.Seq-f.Seq >= uint64(s.eventsKept) {
			if err := w.txn.Delete(tableEvents, f); err != nil {
				return fmt.Errorf("drop event %d: %w", f.Seq, err)
			}
		}
		return nil
	})
	return e.Seq, err
}

// EventsAfter returns the events numbered above seq, oldest first; ws fires
// when an event is appended.
func (t Txn) EventsAfter(ws memdb.WatchSet, seq uint64) ([]*Event, error) {
	all, err := t.txn.Get(tableEvents, "id")
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	addWatch(ws, all.WatchCh())
	it, err := t.txn.LowerBound(tableEvents, "id", seq+1)
	if err != nil {
		return nil, fmt.Errorf("events after %d: %w", seq, err)
	}
	var out []*Event
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*Event))
	}
	return out, nil
}
