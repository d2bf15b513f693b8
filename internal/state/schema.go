package state

import memdb "github.com/hashicorp/go-memdb"

// Table names.
const (
	tableClusters  = "clusters"
	tableEndpoints = "endpoints"
	tableListeners = "listeners"
	tableEvents    = "events"
)

func schema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			tableClusters:  clustersTable(),
			tableEndpoints: endpointsTable(),
			tableListeners: listenersTable(),
			tableEvents:    eventsTable(),
		},
	}
}
