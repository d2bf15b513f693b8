//go:build !linux

package checker

import (
	"syscall"
	"time"
)

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist: the
// keepalive probe count alone then ends a dead connection, a little later.
func setUserTimeout(syscall.RawConn, time.Duration) error { return nil }
