package tcpproxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
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
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestAdaptiveCopy runs one direction of a pair over real sockets through
// phases of small messages, bulk and small messages again, and checks that
// every byte arrives in order, that the bulk went through the kernel pipe
// and that the small messages did not.
func TestAdaptiveCopy(t *testing.T) {
	for _, window := range []time.Duration{0, 50 * time.Millisecond} {
		t.Run("window "+window.String(), func(t *testing.T) {
			client, clientPeer := tcpPair(t) // the test writes client, the copy reads clientPeer
			upstreamPeer, upstream := tcpPair(t)
			pr := &pair{conns: [2]net.Conn{clientPeer, upstreamPeer}, results: make(chan copyResult, 2), window: window}
			pr.setupCopies()
			if !pr.raw {
				t.Fatal("two TCP connections, yet no raw copy")
			}
			go pr.copy(toUpstream)

			var sent bytes.Buffer
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(upstream)
				got <- b
			}()
			// Small writes with pauses between them arrive as small chunks.
			small := func(n int) {
				for i := range n {
					msg := bytes.Repeat([]byte{byte(i)}, 100)
					client.Write(msg)
					sent.Write(msg)
					time.Sleep(time.Millisecond)
				}
			}
			small(20)
			spliceBefore := pr.sockets[toUpstream].spliced.Load()
			bulk := make([]byte, 32<<20)
			rand.Read(bulk)
			client.Write(bulk)
			sent.Write(bulk)
			time.Sleep(50 * time.Millisecond) // let the bulk drain before the small phase
			small(20)
			client.CloseWrite()

			select {
			case r := <-pr.results:
				if r.err != nil {
					t.Fatalf("copy failed: %v", r.err)
				}
				if r.n != int64(sent.Len()) {
					t.Errorf("copy reports %d bytes, want %d", r.n, sent.Len())
				}
			case <-time.After(waitTimeout):
				t.Fatal("copy did not end")
			}
			if b := <-got; !bytes.Equal(b, sent.Bytes()) {
				t.Fatalf("received %d bytes that differ from the %d sent", len(b), sent.Len())
			}
			c := &pr.sockets[toUpstream]
			if spliceBefore != 0 {
				t.Errorf("small messages spliced: %d bytes", spliceBefore)
			}
			spliced := c.spliced.Load()
			if spliced < int64(len(bulk))/2 {
				t.Errorf("%d of the %d bulk bytes spliced, want most", spliced, len(bulk))
			}
			// After the bulk, smallSplices small chunks are spliced before
			// the copy goes back to read/write.
			if most := int64(len(bulk) + smallSplices*100); spliced > most {
				t.Errorf("%d bytes spliced, more than the %d bulk bytes and %d small messages: the copy did not go back to read/write", spliced, len(bulk), smallSplices)
			}
			if c.pipe != nil || c.buf != nil {
				t.Error("the copy kept its pipe or buffer after it ended")
			}
		})
	}
}
