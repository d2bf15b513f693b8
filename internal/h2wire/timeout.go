package h2wire

import (
	"strconv"
	"time"
)

// maxTimeoutValue is the largest number grpc-timeout can carry: gRPC's
// HTTP/2 protocol allows at most 8 digits before the unit.
const maxTimeoutValue = 99_999_999

// timeoutUnits are grpc-timeout's units, finest first.
var timeoutUnits = [...]struct {
	size time.Duration
	name byte
}{
	{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'},
	{time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'},
}

// FormatTimeout encodes d as a grpc-timeout value in the finest unit that
// fits in 8 digits. It rounds up, so that a peer's deadline is never
// earlier than the sender's; d <= 0 (already past) is sent as 1n, the
// shortest deadline there is, and a d beyond 99999999H as 99999999H.
func FormatTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range timeoutUnits {
		n := d / u.size // not (d+size-1)/size: that overflows near the largest Duration
		if d%u.size != 0 {
			n++
		}
		if n <= maxTimeoutValue {
			return strconv.FormatInt(int64(n), 10) + string(u.name)
		}
	}
	return "99999999H"
}

// ParseTimeout parses a grpc-timeout value: 1 to 8 digits and a unit (H,
// M, S, m, u, n). ok is false for anything else, a sign included. A value
// too long for a time.Duration saturates at the largest one.
func ParseTimeout(v string) (d time.Duration, ok bool) {
	if len(v) < 2 || len(v) > 9 || v[0] == '+' || v[0] == '-' {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	for _, u := range timeoutUnits {
		if u.name != v[len(v)-1] {
			continue
		}
		if n > int64(1<<63-1)/int64(u.size) {
			return 1<<63 - 1, true
		}
		return time.Duration(n) * u.size, true
	}
	return 0, false
}
