package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/vigil-proxy/vigil/internal/config"
)

func validateCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration `FILE` to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	endpoints := 0
	for _, c := range cfg.Clusters {
		endpoints += len(c.Endpoints)
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d clusters, %d endpoints)\n", cfg.File, len(cfg.Listeners), len(cfg.Clusters), endpoints)
	return 0
}

// printConfigErrors prints each configuration error on a line of its own:
// FILE:LINE:COL: path.to.field: message.
func printConfigErrors(w io.Writer, err error) {
	var list config.ErrorList
	if errors.As(err, &list) {
		for _, e := range list {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintln(w, err)
}
