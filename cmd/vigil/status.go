package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigil-proxy/vigil/internal/admin"
)

// statusCmd prints the clusters and endpoints a running vigil reports on
// its admin API, as a table (or JSON), once or following its events.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("admin", admin.DefaultAddress, "`ADDR` of the admin API: host:port or http://host:port")
	watch := fs.Bool("watch", false, "follow the eviction log and redraw after every event (Ctrl-C to stop)")
	asJSON := fs.Bool("json", false, "print the raw /clusters JSON (with --watch: one line per change)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each answer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	client, err := admin.NewClient(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "vigil status: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	terminal := isTerminal(stdout)
	err = admin.Status(ctx, admin.StatusOptions{
		Client:   client,
		Out:      stdout,
		JSON:     *asJSON,
		Watch:    *watch,
		Terminal: terminal,
		Color:    terminal && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb",
		Timeout:  *timeout,
	})
	if err != nil {
		fmt.Fprintf(stderr, "vigil status: %v\n", err)
		return 1
	}
	return 0
}

// isTerminal reports whether w is a terminal (a character device), the
// only place colours and in-place redraws belong.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
