package tcpproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// socketCopy is one direction of a pair when both sides are *net.TCPConn:
// it reads, writes and splices with raw system calls on the non-blocking
// sockets, inside the callbacks of their syscall.RawConn. The runtime's
// poller still parks the goroutine while a socket has nothing to read or
// no room, and read deadlines apply; but the calls do not enter the
// scheduler as system calls. Each such entry in a proxy that idles between
// chunks wakes the runtime's sysmon thread from its deep sleep (a futex
// wake and a context switch), which then polls every 20µs for a while: a
// large part of the CPU per chunk of io.Copy's splice (perf). A call on a
// non-blocking socket never blocks, so holding the P through it is what
// the scheduler would do anyway for so short a call.
//
// A pair holds both directions' socketCopy, set up by setupCopies before
// the copies start; one goroutine then runs each.
type socketCopy struct {
	srcConn  *net.TCPConn // for its read deadline
	src, dst syscall.RawConn
	// io is the one callback handed to src.Read and dst.Write, made once:
	// op says what it does.
	io func(fd uintptr) bool
	op int

	buf   *[copyBufSize]byte // the read/write buffer; nil while waiting for data
	rn    int                // bytes the last read or splice in moved
	rerr  syscall.Errno
	wrote int // bytes of the chunk written so far
	werr  syscall.Errno
	wfail error // dst.Write's own error (closed, deadline)
	// toSplice: the copy loop saw bulkReads full reads in a row.
	toSplice bool

	pipe    *splicePipe // non-nil in splice mode
	noPipe  bool        // splice failed once (no pipe, or not supported): copy only
	streak  int         // full reads (copy mode) or small splices (splice mode) in a row
	written int64
	spliced atomic.Int64 // of written, the bytes spliced (read by tests while the copy runs)
}

// What socketCopy.io does.
const (
	opRead      = iota // read chunks into the buffer and write each (see copyChunks)
	opWrite            // write the buffer's chunk
	opSpliceIn         // splice from src into the pipe
	opSpliceOut        // splice from the pipe to dst
)

// setupCopies prepares raw copies for both directions when both
// connections are plain TCP; otherwise the copies use io.Copy.
func (pr *pair) setupCopies() {
	client, ok1 := pr.conns[0].(*net.TCPConn)
	upstream, ok2 := pr.conns[1].(*net.TCPConn)
	if !ok1 || !ok2 {
		return
	}
	rc, err1 := client.SyscallConn()
	ru, err2 := upstream.SyscallConn()
	if err1 != nil || err2 != nil {
		return
	}
	pr.sockets[toUpstream].init(client, rc, ru)
	pr.sockets[toClient].init(upstream, ru, rc)
	pr.raw = true
}

func (c *socketCopy) init(srcConn *net.TCPConn, src, dst syscall.RawConn) {
	c.srcConn, c.src, c.dst = srcConn, src, dst
	c.io = c.do
}

// do runs c.op on fd; false: the socket is not ready, wait.
func (c *socketCopy) do(fd uintptr) bool {
	switch c.op {
	case opRead:
		return c.readChunks(fd)
	case opWrite:
		return c.writeChunk(fd)
	case opSpliceIn:
		return c.spliceIn(fd)
	default: // opSpliceOut
		return c.spliceOut(fd)
	}
}

// run copies until src's EOF (nil error) or an error, and returns the bytes
// written to dst. With a window, src is read under a read deadline that
// many away, and every expiry reports the bytes moved since the last one
// to a (see pump).
func (c *socketCopy) run(window time.Duration, a *activity) (int64, error) {
	defer c.release()
	var reported int64
	if window > 0 {
		c.srcConn.SetReadDeadline(time.Now().Add(window))
	}
	for {
		var err error
		if c.pipe == nil {
			err = c.copyChunks()
		} else {
			err = c.spliceChunk()
		}
		if window > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			a.report(c.written - reported)
			reported = c.written
			c.srcConn.SetReadDeadline(time.Now().Add(window))
			continue
		}
		if err != nil {
			if window > 0 {
				a.report(c.written - reported)
			}
			if err == io.EOF {
				err = nil
			}
			return c.written, err
		}
	}
}

// closeWrite sends a FIN to dst's peer.
func (c *socketCopy) closeWrite() {
	c.dst.Control(func(fd uintptr) {
		syscall.RawSyscall(syscall.SYS_SHUTDOWN, fd, syscall.SHUT_WR, 0)
	})
}

// copyChunks copies chunk after chunk through the buffer, until src's EOF
// (io.EOF), an error, or a run of full reads that calls for splice (nil).
//
// It stays inside one src.Read while the connection carries small chunks:
// the callback reads a chunk, writes it to dst (a nested dst.Write, which
// waits for room if need be) and reads again, until a read says EAGAIN and
// src.Read waits for the poller. A chunk thus costs its read and its write
// and none of src.Read's own bookkeeping (its lock, the poller's reset).
//
// The read after a short one cannot be skipped, although it usually finds
// nothing: a FIN or a reset that came with the last bytes leaves no
// readiness event behind them (the event that woke the copy covered
// both), so only a read sees it.
func (c *socketCopy) copyChunks() error {
	c.rerr, c.werr, c.wfail, c.toSplice, c.op = 0, 0, nil, false, opRead
	err := c.src.Read(c.io)
	c.putBuf()
	switch {
	case err != nil:
		return err
	case c.wfail != nil:
		return c.wfail
	case c.werr != 0:
		return os.NewSyscallError("write", c.werr)
	case c.rerr != 0:
		return os.NewSyscallError("read", c.rerr)
	case c.toSplice:
		c.startSplice()
		return nil
	}
	return io.EOF
}

// readChunks is copyChunks' callback on src: it reads and writes chunks
// until src has nothing more for now (false: wait for the poller), or the
// copy must end or switch modes (true, with c's fields saying why).
func (c *socketCopy) readChunks(fd uintptr) bool {
	for {
		if c.buf == nil {
			c.buf = copyBufs.Get().(*[copyBufSize]byte)
		}
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.buf[0])), copyBufSize)
		switch errno {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.putBuf() // no buffer held while the connection waits
			return false
		default:
			c.rerr = errno
			return true
		}
		if n == 0 {
			return true // EOF
		}
		c.rn, c.wrote, c.op = int(n), 0, opWrite
		err := c.dst.Write(c.io)
		c.op = opRead
		c.written += int64(c.wrote)
		if err != nil {
			c.wfail = err
			return true
		}
		if c.werr != 0 {
			return true
		}
		if c.rn < copyBufSize {
			c.streak = 0
			continue
		}
		if c.streak++; c.streak >= bulkReads && !c.noPipe {
			c.toSplice = true
			return true
		}
	}
}

// writeChunk writes the rest of the chunk; false: the socket is full, wait
// for room.
func (c *socketCopy) writeChunk(fd uintptr) bool {
	for c.wrote < c.rn {
		rest := c.buf[c.wrote:c.rn]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&rest[0])), uintptr(len(rest)))
		switch {
		case errno == 0 && n > 0:
			c.wrote += int(n)
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

func (c *socketCopy) putBuf() {
	if c.buf != nil {
		copyBufs.Put(c.buf)
		c.buf = nil
	}
}

var copyBufs = sync.Pool{New: func() any { return new([copyBufSize]byte) }}

// startSplice switches to splice mode, or stays in copy mode for good when
// no pipe can be had.
func (c *socketCopy) startSplice() {
	c.streak = 0
	c.putBuf()
	p, err := getPipe()
	if err != nil {
		c.noPipe = true
		return
	}
	c.pipe = p
}

// spliceChunk splices what src has into the pipe and from the pipe to dst;
// io.EOF at src's EOF.
func (c *socketCopy) spliceChunk() error {
	c.rn, c.rerr, c.op = 0, 0, opSpliceIn
	if err := c.src.Read(c.io); err != nil {
		return err
	}
	switch {
	case c.rerr == syscall.EINVAL:
		// The kernel cannot splice this socket; nothing was consumed.
		c.noPipe = true
		c.stopSplice()
		return nil
	case c.rerr != 0:
		return os.NewSyscallError("splice", c.rerr)
	case c.rn == 0:
		return io.EOF
	}
	c.pipe.data += c.rn
	c.werr, c.op = 0, opSpliceOut
	before := c.pipe.data
	err := c.dst.Write(c.io)
	c.written += int64(before - c.pipe.data)
	c.spliced.Add(int64(before - c.pipe.data))
	if err == nil && c.werr != 0 {
		err = os.NewSyscallError("splice", c.werr)
	}
	if err != nil {
		return err
	}
	if c.rn >= copyBufSize/4 {
		c.streak = 0
		return nil
	}
	if c.streak++; c.streak >= smallSplices {
		c.stopSplice()
	}
	return nil
}

// spliceIn moves what the socket has into the (empty) pipe; false: nothing
// to read yet.
func (c *socketCopy) spliceIn(fd uintptr) bool {
	for {
		n, errno := splice(int(fd), c.pipe.w, maxSplice)
		switch errno {
		case 0:
			c.rn = n
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

// spliceOut moves the pipe's contents to the socket; false: the socket is
// full, wait for room.
func (c *socketCopy) spliceOut(fd uintptr) bool {
	for c.pipe.data > 0 {
		n, errno := splice(c.pipe.r, int(fd), c.pipe.data)
		switch {
		case errno == 0 && n > 0:
			c.pipe.data -= n
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

func (c *socketCopy) stopSplice() {
	c.streak = 0
	if c.pipe != nil {
		putPipe(c.pipe)
		c.pipe = nil
	}
}

func (c *socketCopy) release() {
	c.putBuf()
	c.stopSplice()
}

// splice moves up to n bytes from in to out without blocking on the pipe
// side; the sockets are non-blocking themselves.
func splice(in, out, n int) (int, syscall.Errno) {
	const spliceNonblock = 0x2 // SPLICE_F_NONBLOCK
	r, _, errno := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceNonblock)
	return int(r), errno
}

// maxSplice is the most one splice asks to move, and the size asked for
// the pipes: 1 MiB, /proc/sys/fs/pipe-max-size's default (as Go's own
// splice does).
const maxSplice = 1 << 20

// splicePipe is a kernel pipe used to splice between two sockets; data
// counts the bytes in it.
type splicePipe struct {
	r, w    int
	data    int
	cleanup runtime.Cleanup
}

// pipes keeps emptied pipes for the next bulk copy; pipes the pool drops
// are closed by their cleanup.
var pipes sync.Pool

func getPipe() (*splicePipe, error) {
	if p, ok := pipes.Get().(*splicePipe); ok {
		return p, nil
	}
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	// A smaller pipe works too, with more system calls.
	syscall.Syscall(syscall.SYS_FCNTL, uintptr(fds[0]), syscall.F_SETPIPE_SZ, maxSplice)
	p := &splicePipe{r: fds[0], w: fds[1]}
	p.cleanup = runtime.AddCleanup(p, closePipe, fds)
	return p, nil
}

// putPipe keeps an empty pipe for reuse and closes one with bytes left in
// it (a copy that failed mid-chunk).
func putPipe(p *splicePipe) {
	if p.data != 0 {
		p.cleanup.Stop()
		closePipe([2]int{p.r, p.w})
		return
	}
	pipes.Put(p)
}

func closePipe(fds [2]int) {
	syscall.Close(fds[0])
	syscall.Close(fds[1])
}
