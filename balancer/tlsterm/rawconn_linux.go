package tlsterm

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn is the TCP connection under a TLS server connection, read and
// written with raw system calls on its non-blocking socket, as
// balancer/grpcproxy's rawIO does for plaintext: the runtime's poller
// still parks the goroutine when the socket has nothing to read or no
// room, and deadlines apply, but the calls do not enter the scheduler as
// system calls. crypto/tls reads and writes through it, so without it
// every record read or written on a TLS listener entered the scheduler,
// which in a proxy idle between RPCs wakes the runtime's sysmon thread
// from its deep sleep: 12% of vigil's CPU at concurrency 1 went to that
// wake-up (runtime.entersyscallWakeSysmon, BenchmarkTLS/grpc/c1 profile).
//
// crypto/tls reads under its input lock and writes under its output
// lock, so one goroutine reads at a time and one writes at a time: each
// has its own fields, and closures made once.
type rawConn struct {
	*net.TCPConn
	rc syscall.RawConn

	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool

	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(fd uintptr) bool
}

// withRawIO wraps c for raw reads and writes when it is a TCP connection;
// anything else is returned as it is.
func withRawIO(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{TCPConn: tc, rc: rc}
	r.readF = r.readOnce
	r.writeF = r.writeSome
	return r
}

// NetConn is the TCP connection itself, for what needs its socket options
// (tcpproxy's reset on abort, TCP_INFO).
func (c *rawConn) NetConn() net.Conn { return c.TCPConn }

func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readF)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case c.rerr != 0:
		return 0, c.opError("read", os.NewSyscallError("read", c.rerr))
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// readOnce reads once; false: nothing to read yet, park.
func (c *rawConn) readOnce(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch errno {
		case 0:
			c.rn = int(n)
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = errno
			return true
		}
	}
}

// Write writes all of p, waiting for room as long as the write deadline
// allows.
func (c *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.writeF)
	n := c.wn
	c.wbuf = nil
	switch {
	case err != nil:
		return n, c.opError("write", err)
	case c.werr != 0:
		return n, c.opError("write", os.NewSyscallError("write", c.werr))
	}
	return n, nil
}

// writeSome writes until wbuf is written; false: the socket is full, park
// until there is room.
func (c *rawConn) writeSome(fd uintptr) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case errno == 0 && n > 0:
			c.wn += int(n)
		case errno == syscall.EINTR:
		case errno == 0 || errno == syscall.EAGAIN:
			return false
		default:
			c.werr = errno
			return true
		}
	}
	return true
}

// opError wraps err as net.TCPConn's Read and Write do, so that callers
// see the same errors (net.ErrClosed, os.ErrDeadlineExceeded, a
// syscall.Errno) through errors.Is and errors.As.
func (c *rawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
