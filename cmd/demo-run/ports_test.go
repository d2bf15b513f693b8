package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// timeWaitPort returns a loopback address whose port is held in TIME_WAIT
// by a closed client connection, as a finished test's can be.
func timeWaitPort(t *testing.T) string {
	t.Helper()
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := free.Addr().String()
	_ = free.Close()
	local, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	d := net.Dialer{LocalAddr: local}
	c, err := d.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Skipf("cannot dial from %s: %v", addr, err)
	}
	accepted, err := srv.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close() // the client closes first: its side enters TIME_WAIT
	_ = accepted.Close()
	if tryListen(addr) == nil {
		t.Skip("this kernel lets a listener bind over TIME_WAIT")
	}
	return addr
}

func TestWaitPortsFree(t *testing.T) {
	held := timeWaitPort(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	tests := []struct {
		name, addr, wantErr, wantSaid string
	}{
		{"free", "127.0.0.1:0", "", ""},
		{"time-wait", held, "still in use after", "TIME_WAIT"},
		{"listening", taken.Addr().String(), "taken by a listening program", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			out := &output{w: &buf, start: time.Now()}
			err := waitPortsFree(context.Background(), out, []string{tt.addr}, 300*time.Millisecond)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("waitPortsFree = %v, want an error with %q", err, tt.wantErr)
			}
			if !strings.Contains(buf.String(), tt.wantSaid) || tt.wantSaid == "" && buf.Len() > 0 {
				t.Errorf("said %q, want %q", buf.String(), tt.wantSaid)
			}
		})
	}
}
