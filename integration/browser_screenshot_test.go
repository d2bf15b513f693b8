//go:build browser

package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/vigil-proxy/vigil/internal/admin"
)

// screenshotPath is the README's screenshot of the status page.
const screenshotPath = "testdata/status-page.png"

// screenshotKey names the PNG text chunk that records which version of
// the page's files the screenshot shows.
const screenshotKey = "vigil-status-page"

// TestBrowserScreenshot drives a small deployment through an eviction
// with traffic flowing, and photographs the page: bin/browser/
// status-page.png always, and the README's copy with make screenshot. It
// fails when the README's copy shows an older version of the page.
func TestBrowserScreenshot(t *testing.T) {
	update := os.Getenv("VIGIL_UPDATE_SCREENSHOT") != ""
	if !update {
		png, err := os.ReadFile(screenshotPath)
		if err != nil {
			t.Fatalf("read the README's screenshot: %v (make screenshot takes it)", err)
		}
		if got := pngText(png, screenshotKey); got != admin.PageAssetsVersion() {
			t.Fatalf("%s shows version %q of the status page, not the current %q: run make screenshot and commit it", screenshotPath, got, admin.PageAssetsVersion())
		}
	}
	orders := []*backend{startBackend(t, "orders-1"), startBackend(t, "orders-2"), startBackend(t, "orders-3")}
	payments := []*backend{startBackend(t, "payments-1"), startBackend(t, "payments-2")}
	search := startBackend(t, "search-1")
	noHealth := startBackend(t, "search-2", withoutHealth())
	cfg := fmt.Sprintf(`
admin:
  address: 127.0.0.1:0
log:
  format: json
listeners:
  - name: orders
    address: 127.0.0.1:0
    protocol: grpc
    cluster: orders
  - name: payments
    address: 127.0.0.1:0
    protocol: grpc
    cluster: payments
clusters:
  - name: orders
    endpoints:
      - address: %s
      - address: %s
        weight: 2
      - address: %s
    health_check:
      interval: 1s
  - name: payments
    lb_policy: least_request
    endpoints:
      - address: %s
      - address: %s
    health_check:
      mode: watch
  - name: search
    lb_policy: random
    endpoints:
      - address: %s
      - address: %s
    health_check:
      mode: check
      interval: 2s
`, orders[0].addr, orders[1].addr, orders[2].addr, payments[0].addr, payments[1].addr, search.addr, noHealth.addr)
	v := startVigil(t, cfg)
	base := "http://" + v.adminAddr()
	pacedTraffic(t, v.listener("orders"), 40*time.Millisecond, 20)
	pacedTraffic(t, v.listener("payments"), 60*time.Millisecond, 0)

	br := newBrowser(t)
	br.open(base + "/")
	time.Sleep(6 * time.Second)
	orders[1].serving(false)
	time.Sleep(7 * time.Second)
	orders[1].serving(true)
	time.Sleep(4 * time.Second)
	payments[1].serving(false)
	time.Sleep(6 * time.Second)
	br.waitJS("the deployment on the page", 5*time.Second, rowExpr("payments", payments[1].addr)+`?.dataset.health === 'unhealthy' && `+
		rowExpr("search", noHealth.addr)+`?.textContent.includes('UNIMPLEMENTED')`)
	br.noProblems()
	shot := br.screenshot("status-page")
	if !update {
		return
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	stamped, err := withPNGText(png, screenshotKey, admin.PageAssetsVersion())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(screenshotPath, stamped, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (page version %s)", screenshotPath, admin.PageAssetsVersion())
}

// pacedTraffic makes a UnaryCall through addr every period until the test
// ends; every failEvery-th asks the backend to fail it (0: none).
func pacedTraffic(t *testing.T, addr string, period time.Duration, failEvery int) {
	t.Helper()
	c := dialClient(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(period)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req := &testpb.SimpleRequest{ResponseSize: 16}
			if failEvery > 0 && i%failEvery == 0 {
				req.ResponseStatus = &testpb.EchoStatus{Code: 13, Message: "asked to fail"}
			}
			callCtx, cancelCall := context.WithTimeout(ctx, 2*time.Second)
			_, _ = c.tc.UnaryCall(callCtx, req)
			cancelCall()
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// pngText returns the value of a tEXt chunk of png, or "".
func pngText(png []byte, key string) string {
	if !bytes.HasPrefix(png, pngSignature) {
		return ""
	}
	for p := png[len(pngSignature):]; len(p) >= 12; {
		n := int(binary.BigEndian.Uint32(p))
		if len(p) < 12+n {
			return ""
		}
		if string(p[4:8]) == "tEXt" {
			if k, v, ok := bytes.Cut(p[8:8+n], []byte{0}); ok && string(k) == key {
				return string(v)
			}
		}
		p = p[12+n:]
	}
	return ""
}

// withPNGText inserts a tEXt chunk key=value after png's header chunk.
func withPNGText(png []byte, key, value string) ([]byte, error) {
	if !bytes.HasPrefix(png, pngSignature) || len(png) < len(pngSignature)+25 {
		return nil, errors.New("not a PNG")
	}
	end := len(pngSignature) + 25 // IHDR: length, type, 13 bytes, CRC
	data := append([]byte("tEXt"+key+"\x00"), value...)
	var chunk bytes.Buffer
	_ = binary.Write(&chunk, binary.BigEndian, uint32(len(data)-4))
	chunk.Write(data)
	_ = binary.Write(&chunk, binary.BigEndian, crc32.ChecksumIEEE(data))
	out := append([]byte(nil), png[:end]...)
	out = append(out, chunk.Bytes()...)
	return append(out, png[end:]...), nil
}
