package probeconn

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FuzzServerBytes: whatever a backend sends after its SETTINGS, a Check
// ends (with an answer or an error) by its deadline, nothing panics, and
// Close returns with the reader gone (goleak checks at the end).
//
// Most inputs leave the call waiting for its deadline, so an exec takes up
// to 200 ms: bound minimization, or each new input stalls the run a minute.
//
//	go test -run '^$' -fuzz FuzzServerBytes -fuzztime 2m -fuzzminimizetime 10x ./checker/internal/probeconn/
func FuzzServerBytes(f *testing.F) {
	frames := func(write func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer)) []byte {
		var out, hbuf bytes.Buffer
		write(http2.NewFramer(&out, nil), hpack.NewEncoder(&hbuf), &hbuf)
		return out.Bytes()
	}
	headers := func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer, end bool, kv ...string) {
		hbuf.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndStream: end, EndHeaders: true})
	}
	f.Add([]byte{})
	f.Add(frames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		headers(fr, enc, hbuf, false, ":status", "200", "content-type", "application/grpc")
		_ = fr.WriteData(1, false, message(0))
		headers(fr, enc, hbuf, true, "grpc-status", "0")
	}))
	f.Add(frames(func(fr *http2.Framer, enc *hpack.Encoder, hbuf *bytes.Buffer) {
		headers(fr, enc, hbuf, true, ":status", "200", "content-type", "application/grpc", "grpc-status", "12")
	}))
	f.Add(frames(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) {
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteWindowUpdate(0, 1<<20)
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
		_ = fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	}))
	f.Add(frames(func(fr *http2.Framer, _ *hpack.Encoder, _ *bytes.Buffer) {
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WriteContinuation(1, true, []byte{0x82})
	}))

	f.Fuzz(func(t *testing.T, reply []byte) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		served := make(chan struct{})
		go func() {
			defer close(served)
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
			if _, err := io.ReadFull(nc, make([]byte, len(http2.ClientPreface))); err != nil {
				return
			}
			_ = http2.NewFramer(nc, nil).WriteSettings()
			_, _ = nc.Write(reply)
			_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.Copy(io.Discard, nc)
		}()
		c := New(ln.Addr().String(), Options{Dial: dial, MaxRecvMessage: 1 << 10})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, _ = healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Errorf("Check returned %v after its 200 ms deadline", elapsed)
		}
		_ = c.Close()
		_ = ln.Close()
		<-served
	})
}
