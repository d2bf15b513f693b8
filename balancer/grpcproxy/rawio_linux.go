package grpcproxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP connection with raw system calls on its
// non-blocking socket: the runtime's poller still parks the goroutine when
// the socket has nothing to read or no room, and deadlines apply, but the
// calls do not enter the scheduler as system calls. In a proxy idle
// between RPCs each such entry wakes the runtime's sysmon thread from its
// deep sleep, which then polls every 20µs for a while: about a sixth of
// vigil's CPU per RPC at concurrency 1 went there (perf). A read or write
// on a non-blocking socket never blocks, so holding the P through it is
// what the runtime would do anyway for so short a call.
//
// One goroutine reads at a time, one writes at a time (Write and TryWrite
// never overlap): each has its own fields, and closures made once.
type rawIO struct {
	nc net.Conn
	rc syscall.RawConn // nil: nc's own Read and Write

	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	readF func(fd uintptr) bool

	wbuf   []byte
	wn     int
	werr   syscall.Errno
	writeF func(fd uintptr) bool
	tryF   func(fd uintptr) bool
}

func newRawIO(nc net.Conn) *rawIO {
	c := &rawIO{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.rc = rc
		}
	}
	c.readF = c.readOnce
	c.writeF = func(fd uintptr) bool { return c.writeSome(fd, true) }
	c.tryF = func(fd uintptr) bool { return c.writeSome(fd, false) }
	return c
}

func (c *rawIO) Read(p []byte) (int, error) {
	if c.rc == nil {
		return c.nc.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = p, 0, 0
	err := c.rc.Read(c.readF)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case c.rerr != 0:
		return 0, os.NewSyscallError("read", c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

// readOnce reads once; false: nothing to read yet, park.
func (c *rawIO) readOnce(fd uintptr) bool {
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
func (c *rawIO) Write(p []byte) (int, error) {
	if c.rc == nil {
		return c.nc.Write(p)
	}
	return c.write(p, c.writeF)
}

// TryWrite writes what the socket takes now, without waiting: the rest is
// for Write. It writes nothing where raw writes are not available.
func (c *rawIO) TryWrite(p []byte) (int, error) {
	if c.rc == nil || len(p) == 0 {
		return 0, nil
	}
	return c.write(p, c.tryF)
}

func (c *rawIO) write(p []byte, f func(uintptr) bool) (int, error) {
	c.wbuf, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(f)
	n := c.wn
	c.wbuf = nil
	if err == nil && c.werr != 0 {
		err = os.NewSyscallError("write", c.werr)
	}
	return n, err
}

// writeSome writes until wbuf is written or the socket is full; then it
// tells the poller to wait for room if wait is set.
func (c *rawIO) writeSome(fd uintptr, wait bool) bool {
	for c.wn < len(c.wbuf) {
		rest := c.wbuf[c.wn:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case errno == 0 && n > 0:
			c.wn += int(n)
		case errno == syscall.EINTR:
		case errno == 0 || errno == syscall.EAGAIN:
			return !wait
		default:
			c.werr = errno
			return true
		}
	}
	return true
}
