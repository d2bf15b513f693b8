//go:build !linux

package tcpproxy

import "net"

// kernelActivity is unknown outside Linux: the idle watch relies on the
// copies' own reports.
func kernelActivity(net.Conn) (uint64, bool) { return 0, false }

func hasKernelActivity(net.Conn) bool { return false }
