package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// ANSI colours, used only when RenderOptions.Color is set.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
	// clearScreen moves the cursor home and clears the terminal.
	clearScreen = "\x1b[H\x1b[2J"
)

// RenderOptions control RenderStatus.
type RenderOptions struct {
	// Now is the time ages are computed against.
	Now time.Time
	// Color adds ANSI colours (only for terminals).
	Color bool
}

// RenderStatus prints resp as two tables: the clusters, then every
// endpoint with its health, reason, how long it has been so, weight,
// work in flight, consecutive failures and its latest probe.
func RenderStatus(w io.Writer, resp *ClustersResponse, opts RenderOptions) error {
	if len(resp.Clusters) == 0 {
		_, err := io.WriteString(w, "no clusters configured\n")
		return err
	}
	t := table{color: opts.Color}
	t.header("CLUSTER", "HEALTHY", "PANIC", "POLICY", "CHECK")
	for _, c := range resp.Clusters {
		healthy := cell{text: fmt.Sprintf("%d/%d", c.Healthy, c.Total), color: ansiGreen}
		switch {
		case c.Total == 0:
			healthy.color = ""
		case c.Healthy == 0:
			healthy.color = ansiRed
		case c.Healthy < c.Total:
			healthy.color = ansiYellow
		}
		panicking := cell{text: "no"}
		if c.Panic {
			panicking = cell{text: "yes", color: ansiRed + ansiBold}
		}
		t.row(cell{text: c.Name, color: ansiBold}, healthy, panicking, cell{text: dash(c.LBPolicy)}, cell{text: dash(c.Check)})
	}
	var b bytes.Buffer
	t.write(&b)
	b.WriteByte('\n')

	t = table{color: opts.Color}
	t.header("CLUSTER", "ENDPOINT", "HEALTH", "REASON", "FOR", "WEIGHT", "INFLIGHT", "FAILURES", "PROBED", "LATENCY")
	for _, c := range resp.Clusters {
		for _, e := range c.Endpoints {
			since := "-"
			if !e.Since.IsZero() {
				since = age(opts.Now.Sub(e.Since))
			}
			probed, latency := "-", "-"
			if e.LastProbe != nil {
				probed = age(opts.Now.Sub(*e.LastProbe)) + " ago"
			}
			if e.LastLatencyMS != nil {
				latency = formatMillis(*e.LastLatencyMS)
			}
			t.row(
				cell{text: c.Name},
				cell{text: e.Address},
				cell{text: e.Health, color: healthColor(e.Health)},
				cell{text: dash(e.Reason), color: reasonColor(e)},
				cell{text: since},
				cell{text: strconv.FormatUint(uint64(e.Weight), 10)},
				cell{text: strconv.FormatInt(e.Inflight, 10)},
				cell{text: strconv.Itoa(e.Failures)},
				cell{text: probed},
				cell{text: latency},
			)
		}
	}
	t.write(&b)
	_, err := w.Write(b.Bytes())
	return err
}

func healthColor(h string) string {
	switch h {
	case "healthy":
		return ansiGreen
	case "unhealthy":
		return ansiRed
	case "pending":
		return ansiYellow
	case "draining":
		return ansiCyan
	}
	return ""
}

func reasonColor(e Endpoint) string {
	if e.Reason == "" {
		return ""
	}
	if e.Health == "unhealthy" {
		return ansiRed
	}
	return ansiDim
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age prints a duration the way an operator reads it at a glance: 42s,
// 3m07s, 5h03m, 2d04h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%02dh", s/86400, s%86400/3600)
}

func formatMillis(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 1000:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.2fs", ms/1000)
}

// cell is one table cell with an optional colour.
type cell struct{ text, color string }

// table aligns cells in columns, measuring the text without its colour
// codes (which text/tabwriter would count as width).
type table struct {
	color bool
	rows  [][]cell
}

func (t *table) header(names ...string) {
	r := make([]cell, len(names))
	for i, n := range names {
		r[i] = cell{text: n, color: ansiDim}
	}
	t.rows = append(t.rows, r)
}

func (t *table) row(cells ...cell) { t.rows = append(t.rows, cells) }

func (t *table) write(b *bytes.Buffer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	for _, r := range t.rows {
		for i, c := range r {
			if t.color && c.color != "" {
				b.WriteString(c.color)
				b.WriteString(c.text)
				b.WriteString(ansiReset)
			} else {
				b.WriteString(c.text)
			}
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+2))
			}
		}
		b.WriteByte('\n')
	}
}

// FormatEvent prints an event on one line: time, level, message, then the
// keys as key=value.
func FormatEvent(ev Event, color bool) string {
	var b strings.Builder
	if !ev.Time.IsZero() {
		b.WriteString(ev.Time.Local().Format("15:04:05.000"))
		b.WriteByte(' ')
	}
	level := fmt.Sprintf("%-5s", ev.Level)
	if color {
		switch ev.Level {
		case "WARN":
			level = ansiYellow + level + ansiReset
		case "ERROR":
			level = ansiRed + level + ansiReset
		}
	}
	b.WriteString(level)
	b.WriteByte(' ')
	b.WriteString(ev.Msg)
	for _, a := range ev.Attrs {
		v := a.String()
		if strings.ContainsAny(v, " \t\"=") || v == "" {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, v)
	}
	return b.String()
}

// StatusOptions configure Status.
type StatusOptions struct {
	Client *Client
	Out    io.Writer
	// JSON prints /clusters' raw answer; with Watch, one compact answer
	// per line after every event.
	JSON bool
	// Watch follows /events and prints the table again after each event
	// until ctx ends.
	Watch bool
	// Terminal redraws the table in place in watch mode (and refreshes
	// it every Refresh); otherwise each event appends a new table.
	Terminal bool
	// Color adds ANSI colours.
	Color bool
	// Timeout bounds each /clusters request (0: 5s).
	Timeout time.Duration
	// Refresh is how often a terminal redraw happens without events (0:
	// 1s), so that ages keep counting.
	Refresh time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// recentEvents is how many events a terminal watch shows under the table.
const recentEvents = 8

// Status prints the clusters and endpoints once, or follows them with
// Watch. It returns an error when the admin API cannot be reached at
// first; while watching, it reports and rides out outages until ctx ends,
// and then returns nil.
func Status(ctx context.Context, opts StatusOptions) error {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	w := &watcher{opts: opts}
	if err := w.fetch(ctx); err != nil {
		return err
	}
	if !opts.Watch {
		return w.print(nil)
	}
	return w.watch(ctx)
}

type watcher struct {
	opts   StatusOptions
	resp   *ClustersResponse
	raw    []byte
	recent []Event
	// streamErr and fetchErr are the latest trouble with the event
	// stream and with /clusters while watching; nil once they work again.
	streamErr, fetchErr error
}

func (w *watcher) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.opts.Timeout)
	defer cancel()
	resp, raw, err := w.opts.Client.Clusters(ctx)
	if err != nil {
		return err
	}
	w.resp, w.raw = resp, raw
	return nil
}

// print writes the current answer: once, or after event ev in watch mode.
func (w *watcher) print(ev *Event) error {
	var b bytes.Buffer
	switch {
	case w.opts.JSON && w.opts.Watch:
		if err := json.Compact(&b, w.raw); err != nil {
			return fmt.Errorf("compact /clusters answer: %w", err)
		}
		b.WriteByte('\n')
	case w.opts.JSON:
		b.Write(w.raw)
	case w.opts.Watch && w.opts.Terminal:
		b.WriteString(clearScreen)
		fmt.Fprintf(&b, "vigil status  %s  %s  (Ctrl-C to quit)\n\n", w.opts.Client.Base(), w.opts.Now().Format("15:04:05"))
		if err := RenderStatus(&b, w.resp, RenderOptions{Now: w.opts.Now(), Color: w.opts.Color}); err != nil {
			return err
		}
		if len(w.recent) > 0 {
			b.WriteString("\nrecent events:\n")
			for _, e := range w.recent {
				b.WriteString("  " + FormatEvent(e, w.opts.Color) + "\n")
			}
		}
		for _, err := range []error{w.streamErr, w.fetchErr} {
			if err == nil {
				continue
			}
			msg := "\n" + err.Error() + " (retrying)"
			if w.opts.Color {
				msg = ansiRed + msg + ansiReset
			}
			b.WriteString(msg + "\n")
		}
	default:
		if ev != nil {
			b.WriteString("\n== " + FormatEvent(*ev, w.opts.Color) + "\n")
		}
		if err := RenderStatus(&b, w.resp, RenderOptions{Now: w.opts.Now(), Color: w.opts.Color}); err != nil {
			return err
		}
	}
	_, err := w.opts.Out.Write(b.Bytes())
	return err
}

// watch follows the event stream in a goroutine it owns and prints after
// every event, until ctx ends.
func (w *watcher) watch(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	events := make(chan Event, 64)
	streamState := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.follow(ctx, events, streamState)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	var tick <-chan time.Time
	if w.opts.Terminal && !w.opts.JSON {
		ticker := time.NewTicker(w.opts.Refresh)
		defer ticker.Stop()
		tick = ticker.C
	}
	if err := w.print(nil); err != nil {
		return err
	}
	for {
		var ev *Event
		select {
		case <-ctx.Done():
			return nil
		case e := <-events:
			ev = &e
			w.recent = append(w.recent, e)
			if len(w.recent) > recentEvents {
				w.recent = w.recent[len(w.recent)-recentEvents:]
			}
		case err := <-streamState:
			if !w.opts.Terminal && !w.opts.JSON {
				switch {
				case err != nil:
					fmt.Fprintf(w.opts.Out, "\n== %v (retrying)\n", err)
				case w.streamErr != nil:
					fmt.Fprintf(w.opts.Out, "\n== reconnected to %s\n", w.opts.Client.Base())
				}
			}
			w.streamErr = err
			if !w.opts.Terminal || w.opts.JSON {
				continue
			}
		case <-tick:
		}
		w.fetchErr = w.fetch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if w.fetchErr != nil && !w.opts.Terminal {
			continue // the stream's own error says it; keep the last table
		}
		if err := w.print(ev); err != nil {
			return err
		}
	}
}

// follow reads the event stream, reconnecting with backoff, and passes
// every event on. It reports each break on streamState, and nil once
// connected again (dropping a report the reader has not taken yet: only
// the latest matters).
func (w *watcher) follow(ctx context.Context, events chan<- Event, streamState chan error) {
	report := func(err error) {
		select {
		case <-streamState:
		default:
		}
		streamState <- err // the only sender: the slot is free
	}
	opts := EventsOptions{Replay: 0}
	if w.opts.Terminal && !w.opts.JSON {
		opts.Replay = recentEvents
	}
	backoff := 250 * time.Millisecond
	broken := false
	opts.Connected = func() {
		backoff = 250 * time.Millisecond
		if broken {
			broken = false
			report(nil)
		}
	}
	for {
		err := w.opts.Client.Events(ctx, opts, func(ev Event) error {
			opts.After = ev.Seq
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			broken = true
			report(err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}
