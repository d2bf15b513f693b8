package grpcproxy

import (
	"encoding/binary"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Every PING is acked with its payload, held ones by the ack clock even
// when nothing else is written, and a burst beyond maxHeldAcks at once.
func TestPingsAreAcked(t *testing.T) {
	be := startBackend(t, nil)
	_, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, be.addr)), Options{})
	for _, n := range []int{1, 3 * maxHeldAcks} {
		c := dialRaw(t, addr)
		want := map[uint64]bool{}
		for i := range n {
			var data [8]byte
			binary.BigEndian.PutUint64(data[:], uint64(1000+i))
			want[uint64(1000+i)] = true
			if err := c.fr.WritePing(false, data); err != nil {
				t.Fatal(err)
			}
		}
		c.until("every PING acked", func(f http2.Frame) bool {
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				delete(want, binary.BigEndian.Uint64(p.Data[:]))
			}
			return len(want) == 0
		})
	}
}

// A backend's PINGs are acked too, and a proxy closed while acks are held
// stops cleanly (goleak checks the clock's goroutine).
func TestBackendPingsAreAcked(t *testing.T) {
	acked := make(chan uint64, 16)
	fb := startFakeBackend(t, func(nc net.Conn) {
		b, err := acceptH2(nc)
		if err != nil {
			return
		}
		id, err := b.nextRequest()
		if err != nil {
			return
		}
		for i := range 3 {
			var data [8]byte
			binary.BigEndian.PutUint64(data[:], uint64(7+i))
			if b.fr.WritePing(false, data) != nil {
				return
			}
		}
		_ = writeBlock(b.fr, id, true, b.headerBlock(
			hpack.HeaderField{Name: ":status", Value: "200"}, hpack.HeaderField{Name: "content-type", Value: "application/grpc"},
			hpack.HeaderField{Name: "grpc-status", Value: "14"}))
		for {
			f, err := b.fr.ReadFrame()
			if err != nil {
				return
			}
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				acked <- binary.BigEndian.Uint64(p.Data[:])
			}
		}
	})
	p, addr := startProxy(t, clusterOf(t, nil, endpointFor(t, fb.addr)), Options{})
	_, _ = testgrpc.NewTestServiceClient(dialClient(t, addr)).EmptyCall(ctxFor(t), &testgrpc.Empty{})
	for i := range 3 {
		select {
		case got := <-acked:
			if got != uint64(7+i) {
				t.Errorf("ack %d carries %d; want %d", i, got, 7+i)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the backend's PING %d was not acked", i)
		}
	}
	_ = p.Close()
}
