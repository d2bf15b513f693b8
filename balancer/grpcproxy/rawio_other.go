//go:build !linux

package grpcproxy

import "net"

// rawIO is the connection's own Read and Write where raw system calls are
// not used (see rawio_linux.go).
type rawIO struct{ nc net.Conn }

func newRawIO(nc net.Conn) *rawIO { return &rawIO{nc: nc} }

func (c *rawIO) Read(p []byte) (int, error)  { return c.nc.Read(p) }
func (c *rawIO) Write(p []byte) (int, error) { return c.nc.Write(p) }

// TryWrite writes nothing: the writer goroutine writes everything.
func (c *rawIO) TryWrite([]byte) (int, error) { return 0, nil }
