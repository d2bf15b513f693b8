//go:build browser

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// The status page in a real headless chromium against the real vigil and
// real backends (make test-browser). Screenshots land in bin/browser/.

// rowExpr is a JavaScript expression for the live row of an endpoint.
func rowExpr(cluster, address string) string {
	return `document.querySelector('.row.ep[data-cluster=' + CSS.escape(` + jsString(cluster) + `) + '][data-address=' + CSS.escape(` + jsString(address) + `) + ']')`
}

// logHas is a JavaScript expression: the tail shows a record with every
// one of the texts.
func logHas(texts ...string) string {
	var conds []string
	for _, t := range texts {
		conds = append(conds, `r.textContent.includes(`+jsString(t)+`)`)
	}
	return `[...document.querySelectorAll('#log .rec')].some((r) => ` + strings.Join(conds, " && ") + `)`
}

func TestBrowserStatusPageFollowsHealth(t *testing.T) {
	b1, b2 := startBackend(t, "b1"), startBackend(t, "b2")
	w1 := startBackend(t, "w1")
	cfg := fmt.Sprintf(`
admin:
  address: 127.0.0.1:0
log:
  format: json
listeners:
  - name: api
    address: 127.0.0.1:0
    protocol: grpc
    cluster: orders
clusters:
  - name: orders
    endpoints:
      - address: %s
      - address: %s
        weight: 3
    health_check:
      interval: 100ms
      timeout: 100ms
  - name: payments
    lb_policy: least_request
    endpoints:
      - address: %s
    health_check:
      mode: watch
`, b1.addr, b2.addr, w1.addr)
	v := startVigil(t, cfg)
	base := "http://" + v.adminAddr()

	br := newBrowser(t)
	br.open(base + "/")
	br.evalMarker()
	// Every cluster and endpoint is listed, with its settings.
	br.waitJS("both clusters listed", 10*time.Second,
		`document.querySelector('.row.cl[data-cluster="orders"]') && document.querySelector('.row.cl[data-cluster="payments"]')`)
	for _, e := range []struct{ cluster, addr string }{{"orders", b1.addr}, {"orders", b2.addr}, {"payments", w1.addr}} {
		br.waitJS(e.addr+" healthy", 10*time.Second, rowExpr(e.cluster, e.addr)+`?.dataset.health === 'healthy'`)
	}
	admitted := time.Now()
	row := evalJS[string](br, rowExpr("orders", b2.addr)+`.textContent`)
	if !strings.Contains(row, "check") || !strings.Contains(row, "3") {
		t.Errorf("row of %s: %q, want its check mode and weight 3", b2.addr, row)
	}
	cl := evalJS[string](br, `document.querySelector('.row.cl[data-cluster="payments"]').textContent`)
	if !hasAll(cl, "1 / 1 healthy", "least_request", "watch", "no panic") {
		t.Errorf("cluster row: %q, want healthy/total, policy, check mode and panic", cl)
	}
	br.screenshot("status-page-healthy")
	// Spans shorter than a pixel of the 15-minute timeline (3 s) are drawn
	// as flapping when two or more follow each other: let each state last
	// longer than that, so that the timeline has plain spans to show.
	time.Sleep(time.Until(admitted.Add(3500 * time.Millisecond)))

	// A flip to NOT_SERVING shows within a second, without a reload: the
	// row turns unhealthy and the eviction appears in the tail.
	flipped := time.Now()
	w1.serving(false)
	took := br.waitJS("the watched endpoint's row unhealthy", time.Second, rowExpr("payments", w1.addr)+`?.dataset.health === 'unhealthy'`)
	br.waitJS("its eviction in the tail", time.Second-took, logHas("endpoint evicted", w1.addr, "NOT_SERVING"))
	t.Logf("watch flip shown after %v", time.Since(flipped))
	b2Flipped := time.Now()
	b2.serving(false)
	br.waitJS("the checked endpoint's row unhealthy", time.Second, rowExpr("orders", b2.addr)+`?.dataset.health === 'unhealthy' && `+logHas("endpoint evicted", b2.addr))
	t.Logf("check flip (interval 100ms) shown after %v", time.Since(b2Flipped))
	br.waitJS("the reason in the row", time.Second, rowExpr("orders", b2.addr)+`.textContent.includes('NOT_SERVING')`)
	br.waitJS("the cluster row's count", time.Second, `document.querySelector('.row.cl[data-cluster="orders"]').textContent.includes('1 / 2 healthy')`)
	br.checkMarker()
	br.screenshot("status-page-evicted")
	time.Sleep(time.Until(flipped.Add(3500 * time.Millisecond)))

	// Readmission turns the rows back.
	w1.serving(true)
	b2.serving(true)
	br.waitJS("readmitted rows", 5*time.Second, rowExpr("payments", w1.addr)+`?.dataset.health === 'healthy' && `+rowExpr("orders", b2.addr)+`?.dataset.health === 'healthy'`)
	br.waitJS("the readmission in the tail", time.Second, logHas("endpoint readmitted", w1.addr))
	// The timeline shows the span: healthy, then unhealthy, then healthy.
	spans := `(` + rowExpr("payments", w1.addr) + `.querySelector('canvas.tl').dataset.spans)`
	br.waitJS("the eviction's span on the timeline", 3*time.Second, spans+`.includes('huh')`)
	title := evalJS[string](br, rowExpr("payments", w1.addr)+`.querySelector('canvas.tl').title`)
	if !strings.Contains(title, "unhealthy") {
		t.Errorf("timeline title %q does not mention the unhealthy span", title)
	}
	br.checkMarker()

	// The tail filters by cluster and by text.
	br.setLogFilter("payments", "")
	br.waitJS("only payments records", time.Second, `[...document.querySelectorAll('#log .rec')].length > 0 && ![...document.querySelectorAll('#log .rec')].some((r) => r.textContent.includes(`+jsString(b2.addr)+`))`)
	br.setLogFilter("", "readmitted")
	br.waitJS("only readmissions", time.Second, `[...document.querySelectorAll('#log .rec')].length >= 2 && [...document.querySelectorAll('#log .rec')].every((r) => r.textContent.includes('endpoint readmitted'))`)
	br.setLogFilter("", "")
	br.noProblems()
}

func TestBrowserStatusPageRecoversAfterRestart(t *testing.T) {
	b1 := startBackend(t, "b1")
	admin := freeAddr(t)
	cfg := fmt.Sprintf(`
admin:
  address: %s
log:
  format: json
listeners:
  - name: api
    address: 127.0.0.1:0
    protocol: grpc
    cluster: orders
clusters:
  - name: orders
    endpoints:
      - address: %s
    health_check:
      mode: watch
`, admin, b1.addr)
	path := t.TempDir() + "/vigil.yaml"
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	v := startVigilFile(t, path)
	br := newBrowser(t)
	br.open("http://" + admin + "/")
	br.evalMarker()
	br.waitJS("the endpoint healthy", 10*time.Second, rowExpr("orders", b1.addr)+`?.dataset.health === 'healthy'`)
	epoch := evalJS[string](br, `window.vigilStatus.epoch`)

	// vigil stops: the page says so and keeps what it showed.
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	<-v.done
	br.waitJS("the page noticing vigil is gone", 10*time.Second, `document.getElementById('conn').classList.contains('down')`)
	if n := evalJS[int](br, `document.querySelectorAll('.row.ep').length`); n != 1 {
		t.Errorf("%d endpoint rows while vigil is down, want the 1 it had", n)
	}
	br.screenshot("status-page-vigil-down")

	// vigil comes back on the same address: the page reconnects by
	// itself, takes the new process's state, and follows it live.
	startVigilFile(t, path)
	br.waitJS("the page live again on the new process", 15*time.Second,
		`document.getElementById('conn').classList.contains('live') && window.vigilStatus.epoch !== `+jsString(epoch))
	br.waitJS("the endpoint healthy again", 10*time.Second, rowExpr("orders", b1.addr)+`?.dataset.health === 'healthy'`)
	b1.serving(false)
	br.waitJS("a flip after the restart", time.Second, rowExpr("orders", b1.addr)+`?.dataset.health === 'unhealthy'`)
	// The timeline keeps what was seen before the restart, with the gap.
	br.waitJS("the gap on the timeline", time.Second, `(`+rowExpr("orders", b1.addr)+`.querySelector('canvas.tl').dataset.spans).includes('n')`)
	br.checkMarker()
	br.screenshot("status-page-after-restart")
	// The browser logs the refused connections while vigil is down; the
	// page itself must not throw.
	for _, p := range br.problems() {
		if strings.HasPrefix(p, "exception") {
			t.Errorf("page problem: %s", p)
		}
	}
}

// evalMarker sets a value on window that a reload would lose.
func (b *browser) evalMarker() {
	b.t.Helper()
	evalJS[bool](b, `window.__vigilNoReload = true`)
}

// checkMarker fails the test if the page was reloaded since evalMarker.
func (b *browser) checkMarker() {
	b.t.Helper()
	if !evalJS[bool](b, `window.__vigilNoReload === true`) {
		b.t.Fatal("the page was reloaded")
	}
}

func (b *browser) setLogFilter(cluster, text string) {
	b.t.Helper()
	evalJS[bool](b, `(() => {
		const s = document.getElementById('log-cluster'); s.value = `+jsString(cluster)+`; s.dispatchEvent(new Event('change'));
		const f = document.getElementById('log-filter'); f.value = `+jsString(text)+`; f.dispatchEvent(new Event('input'));
		return true; })()`)
}

// noProblems fails the test on any console error or warning, CSP report
// or exception.
func (b *browser) noProblems() {
	b.t.Helper()
	for _, p := range b.problems() {
		b.t.Errorf("browser: %s", p)
	}
}

func hasAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// markup is what a hostile backend or config file might carry.
const markup = `<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">`

func TestBrowserStatusPageEscapesEverything(t *testing.T) {
	bad := startXSSBackend(t, markup)
	good := startBackend(t, "good")
	cfg := fmt.Sprintf(`
admin:
  address: 127.0.0.1:0
log:
  format: json
listeners:
  - name: api
    address: 127.0.0.1:0
    protocol: grpc
    cluster: xss
clusters:
  - name: xss
    endpoints:
      - address: %s
      - address: %s
    health_check:
      interval: 100ms
      timeout: 100ms
`, bad, good.addr)
	v := startVigil(t, cfg)
	base := "http://" + v.adminAddr()
	v.wait(10*time.Second, 0, match("endpoint evicted", "endpoint", bad), "the hostile backend's eviction")
	// A cluster whose name is markup is refused by the configuration, and
	// the refusal, which quotes it, is an eviction-log record.
	hostile := `clusters:
  - name: '` + strings.ReplaceAll(markup, `'`, `''`) + `'
`
	if err := os.WriteFile(v.cfgPath, []byte(strings.Replace(cfg, "clusters:\n", hostile+"  - name: other\n    endpoints: [{address: "+good.addr+"}]\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	v.wait(10*time.Second, 0, match("config rejected"), "the hostile config's rejection")

	br := newBrowser(t)
	br.open(base + "/")
	br.waitJS("the backend's error in its row", 5*time.Second, rowExpr("xss", bad)+`?.querySelector('.err')?.textContent === `+jsString(markup))
	br.waitJS("the error in the tail", 5*time.Second, logHas("endpoint evicted", markup))
	br.waitJS("the refused cluster name in the tail", 5*time.Second, logHas("config rejected", "window.__xss=1</script>"))
	br.screenshot("status-page-xss")
	// Nothing ran and nothing was made of the markup: no image, no script
	// but the page's own, no handler.
	if got := evalJS[string](br, `String(window.__xss)`); got != "undefined" {
		t.Errorf("window.__xss = %s: the markup ran", got)
	}
	if n := evalJS[int](br, `document.querySelectorAll('img, [onerror]').length`); n != 0 {
		t.Errorf("%d img or onerror elements in the page", n)
	}
	if src := evalJS[string](br, `[...document.scripts].map((s) => s.src).join(' ')`); strings.Count(src, "/ui/app.js") != 1 || strings.Contains(src, " ") {
		t.Errorf("scripts in the page: %q, want only /ui/app.js", src)
	}
	br.noProblems()

	// The server-rendered page escapes it too (what a browser without
	// JavaScript shows).
	body := fetchHTML(t, base+"/")
	if strings.Contains(body, "<script>window") || strings.Contains(body, "<img") {
		t.Errorf("server-rendered page has the markup unescaped:\n%s", body)
	}
	if !strings.Contains(body, "&lt;script&gt;window.__xss=1&lt;/script&gt;") {
		t.Errorf("server-rendered page does not show the markup as text")
	}
	br.do("open without JavaScript", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	}), chromedp.Navigate(base+"/"))
	br.screenshot("status-page-no-javascript")
}

// fetchHTML gets url as a browser would ask for it.
func fetchHTML(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/html")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	return string(b)
}
