// Package logging builds vigil's slog logger: text or JSON, a level and a
// format that a reload can change while every derived logger keeps working,
// the eviction log's handler, which copies its records into the state
// store for the admin API's event stream, and the adapter that routes gRPC's own logging
// through slog.
package logging
