package grpcproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		_ = client.Close()
		_ = server.Close()
	})
	return client, server
}

// rawIO moves bytes both ways, TryWrite never waits, Write honours the
// write deadline, and a closed peer reads as EOF; the same through the
// listener's countedConn and, without a socket, through net.Pipe.
func TestRawIO(t *testing.T) {
	a, b := tcpPair(t)
	for _, tt := range []struct {
		name string
		conn net.Conn
	}{
		{"tcp", a},
		{"countedConn", &countedConn{Conn: a, p: &Proxy{}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newRawIO(tt.conn)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4)
			if _, err := io.ReadFull(b, got); err != nil || string(got) != "ping" {
				t.Fatalf("peer read %q, %v", got, err)
			}
			if _, err := b.Write([]byte("pong")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "pong" {
				t.Fatalf("read %q, %v", got, err)
			}
		})
	}

	// The peer does not read: TryWrite takes what fits and returns.
	c := newRawIO(a)
	chunk := make([]byte, 1<<20)
	total := 0
	for range 256 {
		n, err := c.TryWrite(chunk)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		if n < len(chunk) {
			break
		}
	}
	if total == 0 || total >= 256<<20 {
		t.Fatalf("TryWrite wrote %d bytes to a peer that does not read; want the socket buffers' worth", total)
	}
	// Write waits for room, as long as the deadline allows.
	_ = a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Write(chunk); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write to a full socket = %v; want the deadline", err)
	}
	_ = b.Close()
	_ = a.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 4)); err != io.EOF && !isReset(err) {
		t.Fatalf("Read after the peer closed = %v; want EOF", err)
	}

	// Without a socket, the connection's own methods.
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	pc := newRawIO(p1)
	if n, err := pc.TryWrite([]byte("x")); n != 0 || err != nil {
		t.Fatalf("TryWrite on a pipe = %d, %v; want nothing written", n, err)
	}
	go func() { _, _ = p2.Write([]byte("pipe")) }()
	got := make([]byte, 4)
	if _, err := io.ReadFull(pc, got); err != nil || string(got) != "pipe" {
		t.Fatalf("read from a pipe %q, %v", got, err)
	}
}

// isReset: the peer closed with data unread, which resets.
func isReset(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se)
}
