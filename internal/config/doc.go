// Package config loads, defaults and validates vigil's YAML configuration,
// reporting every problem as FILE:LINE:COL: path.to.field: message, and
// computes the difference between two configurations for live reloads.
//
// Load and Parse return either a *Config with every default filled in, or an
// ErrorList holding every problem found, sorted by position: unknown fields
// (with a suggestion for likely typos), wrong YAML types, missing required
// fields, duplicate names and addresses, listeners naming a missing cluster,
// bad addresses, durations, thresholds and enumerations. Only a YAML syntax
// error stops the checks early, since nothing after it can be trusted.
//
// A Parser does what Parse does for successive versions of one file, with
// the same results, re-parsing only the listeners and clusters whose text
// changed: live reloads of big files use it.
//
// Beyond the contract of DESIGN.md, listeners take resource limits:
//
//	max_concurrent_streams  streams per client HTTP/2 connection, >= 1 (default 100)
//	max_message_size        bytes or 4MiB/512KiB/1GiB, 1KiB to 1GiB (default 32MiB)
//	idle_timeout            positive duration (default 1h)
//	max_connections         concurrent client connections, 0 = unlimited (default 10000)
//	access_log.buffer       access log records waiting for the writer, 16 to 1048576 (default 4096)
//
// Details of the YAML accepted:
//   - Exactly one document; an empty file (or only comments) is an error.
//   - An empty section (`health_check:` with nothing under it) means all
//     defaults; an empty scalar (`interval:`) is an error, except that
//     admin.address: "" (explicitly empty) disables the admin server.
//   - Strings must be strings: `name: 123` is refused (quote it) rather than
//     converted. Durations are Go durations (250ms, 5s); a bare number other
//     than 0 is refused for lack of a unit.
//   - Names are letters, digits, '-', '_' and '.', at most 128 characters.
//   - Anchors, aliases and merge keys (<<) are allowed. Alias expansion is
//     bounded: the walk may visit at most twice the document's own node count
//     (or 10,000 more nodes), so a "billion laughs" document is refused with
//     one error instead of expanding.
//   - Files larger than 64MiB are refused.
package config
