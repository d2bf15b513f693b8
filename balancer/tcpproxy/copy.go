package tcpproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// How one direction of a pair moves its bytes.
//
// Both sides are plain *net.TCPConn on Linux (the usual case), so a copy
// makes its own non-blocking system calls on the two sockets (see
// copy_linux.go), in one of two modes chosen by what the connection
// carries:
//
//   - read/write through a user-space buffer, for the small chunks of
//     request/response traffic (gRPC, database protocols): one read and
//     one write per chunk, and no buffer held while the connection waits;
//   - splice(2) through a kernel pipe, for bulk transfers: the bytes never
//     enter user space, which costs the proxy about a third less CPU per
//     MB than copying them.
//
// A copy starts in read/write mode and moves to splice once reads fill its
// buffer (bulkReads of them in a row); it goes back after smallSplices
// splices in a row that moved less than a quarter of a buffer. Splicing
// small chunks costs more than copying them: the kernel copies a small
// segment into a page of its own to hand it to the pipe, and every chunk
// takes a pipe write and a pipe read, where a copy takes one read and one
// write.
//
// Any other connection (TLS, a wrapper that peeked at the first bytes,
// another platform) falls back to io.Copy, which does what the two types
// allow.
const (
	// copyBufSize is the read/write buffer, taken from a pool only while a
	// chunk is in flight. It is io.Copy's default size.
	copyBufSize = 32 << 10
	// bulkReads full reads in a row switch a copy to splice.
	bulkReads = 2
	// smallSplices splices in a row of less than copyBufSize/4 switch it
	// back to read/write.
	smallSplices = 4
)

// pump copies src to dst until src's EOF (nil error) or an error.
//
// When the idle watch needs the copies' reports (pr.window > 0, see
// idle.go), a copy waits for data under a read deadline one window away,
// so that it returns and reports about once a window. The deadline is
// checked only while nothing is in flight, so no data is lost when it
// fires: every chunk read has been written before the next read. There is
// deliberately no write deadline: a write timeout would drop the bytes in
// flight. A copy blocked writing to a peer that does not read is found by
// the idle watch instead, which closes the pair.
func (pr *pair) pump(dir int, dst, src net.Conn) (int64, error) {
	if pr.raw {
		return pr.sockets[dir].run(pr.window, &pr.activity[dir])
	}
	if pr.window == 0 {
		return io.Copy(dst, src)
	}
	a := &pr.activity[dir]
	var total int64
	for {
		src.SetReadDeadline(time.Now().Add(pr.window))
		n, err := io.Copy(dst, src)
		total += n
		a.report(n)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return total, err
		}
	}
}

// closeWrite sends a FIN to the peer of the connection that direction dir
// writes to (or closes it when it cannot half-close), and leaves it
// readable.
func (pr *pair) closeWrite(dir int) {
	if pr.raw {
		pr.sockets[dir].closeWrite()
		return
	}
	dst := pr.conns[1-dir]
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
}
