package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// chaosRaw is an HTTP/2 client that sends what well-behaved gRPC clients
// never send. Nothing is written until the test says so (not even the
// preface).
type chaosRaw struct {
	nc   net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	hbuf bytes.Buffer
	henc *hpack.Encoder
}

func dialChaosRaw(t testing.TB, addr string) *chaosRaw {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &chaosRaw{nc: nc, bw: bufio.NewWriterSize(nc, 64<<10)}
	c.fr = http2.NewFramer(c.bw, bufio.NewReader(nc))
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = 16 << 20
	c.henc = hpack.NewEncoder(&c.hbuf)
	return c
}

// handshake sends the client preface and an empty SETTINGS.
func (c *chaosRaw) handshake() error {
	if _, err := c.bw.WriteString(http2.ClientPreface); err != nil {
		return err
	}
	if err := c.fr.WriteSettings(); err != nil {
		return err
	}
	return c.bw.Flush()
}

// grpcRequest is the header list of a gRPC call to method, then extra.
func grpcRequest(method string, extra ...hpack.HeaderField) []hpack.HeaderField {
	return append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: method}, {Name: ":authority", Value: "vigil"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...)
}

// headers sends a header list on stream id, split into HEADERS and
// CONTINUATION frames of at most 16 KiB, and flushes.
func (c *chaosRaw) headers(id uint32, fields []hpack.HeaderField, endStream bool) error {
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	block := c.hbuf.Bytes()
	const frag = 16 << 10
	first := block[:min(frag, len(block))]
	block = block[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(block) == 0}); err != nil {
		return err
	}
	for len(block) > 0 {
		next := block[:min(frag, len(block))]
		block = block[len(next):]
		if err := c.fr.WriteContinuation(id, len(block) == 0, next); err != nil {
			return err
		}
	}
	return c.bw.Flush()
}

// data sends a DATA frame and flushes.
func (c *chaosRaw) data(id uint32, b []byte, endStream bool) error {
	if err := c.fr.WriteData(id, endStream, b); err != nil {
		return err
	}
	return c.bw.Flush()
}

// grpcMessage frames m as one gRPC message.
func grpcMessage(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	copy(out[5:], b)
	return out
}

// rawOutcome is what vigil did with a raw connection.
type rawOutcome struct {
	Closed   bool          // the connection ended (EOF or reset)
	After    time.Duration // when, since readUntilClosed was called
	GoAway   *http2.GoAwayFrame
	Resets   map[uint32]http2.ErrCode
	Statuses map[uint32]string // grpc-status of streams that ended with trailers
	Settings bool              // vigil sent its SETTINGS
}

// readUntilClosed reads frames (acking SETTINGS and answering nothing else)
// until the connection ends or timeout passes, and says what came.
func (c *chaosRaw) readUntilClosed(timeout time.Duration) rawOutcome {
	return c.readUntilClosedOr(timeout, func(rawOutcome) bool { return false })
}

// readUntilClosedOr is readUntilClosed that also stops once done says so.
func (c *chaosRaw) readUntilClosedOr(timeout time.Duration, done func(rawOutcome) bool) rawOutcome {
	start := time.Now()
	out := rawOutcome{Resets: map[uint32]http2.ErrCode{}, Statuses: map[uint32]string{}}
	_ = c.nc.SetReadDeadline(start.Add(timeout))
	for !done(out) {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			var ne net.Error
			out.Closed = !(errors.As(err, &ne) && ne.Timeout())
			break
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				out.Settings = true
				_ = c.fr.WriteSettingsAck()
				_ = c.bw.Flush()
			}
		case *http2.GoAwayFrame:
			g := *f
			out.GoAway = &g
		case *http2.RSTStreamFrame:
			out.Resets[f.StreamID] = f.ErrCode
		case *http2.MetaHeadersFrame:
			for _, hf := range f.RegularFields() {
				if hf.Name == "grpc-status" {
					out.Statuses[f.StreamID] = hf.Value
				}
			}
		}
	}
	out.After = time.Since(start)
	return out
}

// waitClosed reads and discards until the peer closes nc or timeout
// passes; it reports whether nc was closed, and when.
func waitClosed(nc net.Conn, timeout time.Duration) (bool, time.Duration) {
	start := time.Now()
	_ = nc.SetReadDeadline(start.Add(timeout))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout()), time.Since(start)
}

// vanish closes nc without a FIN or a reset, as a client whose host died
// or dropped off the network: the socket enters TCP repair mode first
// (Linux, CAP_NET_ADMIN), so the kernel closes it silently. vigil's side
// stays open, half-open, until vigil writes to it (and gets a reset) or its
// TCP keepalive probes find the peer gone.
func vanish(nc net.Conn) error {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("%T is not a TCP connection", nc)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		const tcpRepair = 19 // TCP_REPAIR, linux/tcp.h
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_TCP, tcpRepair, 1)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("TCP_REPAIR: %w", serr)
	}
	return nc.Close()
}

// chaosLatencyProbe is a well-behaved client: one connection of its own,
// sequential unary calls, each timed.
type chaosLatencyProbe struct {
	c *client
}

func newChaosLatencyProbe(t testing.TB, addr string) *chaosLatencyProbe {
	t.Helper()
	return &chaosLatencyProbe{c: dialClient(t, addr)}
}

// measure makes calls for d (at least 20) and returns their latencies and
// errors.
func (p *chaosLatencyProbe) measure(d time.Duration) (latencies, []error) {
	var lat latencies
	var errs []error
	deadline := time.Now().Add(d)
	for len(lat)+len(errs) < 20 || time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		_, err := p.c.call(ctx)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lat = append(lat, time.Since(start))
		time.Sleep(2 * time.Millisecond)
	}
	return lat, errs
}

// during measures for as long as abuse runs (at least d) and returns the
// latencies and errors of the well-behaved calls made meanwhile.
func (p *chaosLatencyProbe) during(d time.Duration, abuse func()) (latencies, []error) {
	var wg sync.WaitGroup
	var lat latencies
	var errs []error
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			l, e := p.measure(d)
			lat, errs = append(lat, l...), append(errs, e...)
			select {
			case <-stop:
				return
			default:
			}
		}
	})
	abuse()
	close(stop)
	wg.Wait()
	return lat, errs
}

// chaosLatencyBound is what "unchanged latency" is held to: generous, for
// a race-enabled vigil sharing a loaded 2-core machine with a race-enabled
// test process that runs the backends and the abusive clients too (and
// with the other tests of make test). It tells a client that is held up
// (blocked behind an abuser: seconds, or a failed call) from one that
// waited for a CPU. The figures are logged: p99 is a few milliseconds
// before the abuse and tens during, on a quiet machine.
const chaosLatencyBound = 750 * time.Millisecond

// requireLatency fails if a well-behaved client failed or its p99 went over
// the bound during the abuse.
func requireLatency(t testing.TB, what string, before, during latencies, errs []error) {
	t.Helper()
	t.Logf("%s: well-behaved client before: %v; during: %v", what, before, during)
	if len(errs) > 0 {
		t.Errorf("%s: %d calls of a well-behaved client failed, first: %v", what, len(errs), errs[0])
	}
	if p99 := during.quantile(0.99); p99 > chaosLatencyBound {
		t.Errorf("%s: well-behaved p99 %v during the abuse; want under %v", what, p99, chaosLatencyBound)
	}
}
