package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// waitPortsFree waits until every address in addrs can be listened on,
// for at most limit. The demo's backend ports (5005x, 5006x) lie in
// Linux's ephemeral port range (32768-60999): just after `make test`, the
// client side of a finished test's connection may have been given one of
// them and still hold it in TIME_WAIT, which keeps a listener off it for
// up to 60 s. A port that something listens on is not waited for: that
// is another demo, or another program, and waiting would not help.
func waitPortsFree(ctx context.Context, out *output, addrs []string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for _, addr := range addrs {
		said := false
		for {
			err := tryListen(addr)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%s: %w", addr, err)
			}
			if listening(addr) {
				return fmt.Errorf("%s is taken by a listening program (another demo still running?): %w", addr, err)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s still in use after %v: %w", addr, limit, err)
			}
			if !said {
				out.say("%s is held by a closed connection (TIME_WAIT, up to 60 s after a test or an earlier run): waiting for it", addr)
				said = true
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return nil
}

func tryListen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ln.Close()
}

func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}
