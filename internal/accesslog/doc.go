// Package accesslog writes vigil's access log: one record per RPC (grpc
// listeners) or per connection (tcp listeners), in JSON or as key=value
// text, to stdout, stderr or a file that Reopen reopens (for logrotate).
//
// The data paths never wait for it. A Sink holds a bounded buffer of
// records (a channel of values, so logging allocates nothing) and one
// writer goroutine, which formats and writes them in batches; Log is a
// non-blocking send, and when the buffer is full the record is dropped
// and counted (Logger's drop hook, vigil_access_log_dropped_total), so a
// slow or blocked sink (a full disk, a pipe nobody reads) costs records,
// never latency. Formatting happens on the writer goroutine.
//
// A Sink is owned by whoever opened it: Close stops its goroutine after
// writing what was buffered (cutting a write that blocks for longer than
// closeGrace). Several listeners may share one Sink, each through a Logger
// of its own that stamps the listener's name and format on its records.
package accesslog
