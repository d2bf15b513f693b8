package tcpproxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// hasKernelActivity reports whether kernelActivity can count c: a socket
// (TCP, as the proxy only dials TCP), or TLS over one.
func hasKernelActivity(c net.Conn) bool {
	_, ok := socket(c).(syscall.Conn)
	return ok
}

// kernelActivity is the sum of TCP_INFO's tcpi_bytes_received (from the
// peer) and tcpi_bytes_acked (by the peer), Linux 4.1 and later: it grows
// whenever the connection carries bytes either way, including while a slow
// reader drains what the proxy already wrote. For a TLS connection it
// counts the bytes of the socket beneath.
func kernelActivity(c net.Conn) (uint64, bool) {
	sc, ok := socket(c).(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var infoErr error
	if err := raw.Control(func(fd uintptr) {
		info, infoErr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || infoErr != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}
