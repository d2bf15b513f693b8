package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/vigil-proxy/vigil/internal/config"
)

func validateCmd(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig("vigil validate", args, stderr)
	if cfg == nil {
		return code
	}
	// The files the configuration names must serve too: missing, not PEM,
	// a key that is not its certificate's, or an expired certificate.
	if errs := cfg.CheckFiles(time.Now(), nil, nil); len(errs) > 0 {
		fmt.Fprintln(stderr, strings.Join(config.ErrorLines(errs), "\n"))
		return 1
	}
	// Warnings do not fail the check: the configuration serves as it is.
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, w.Error())
	}
	endpoints := 0
	for _, c := range cfg.Clusters {
		endpoints += len(c.Endpoints)
	}
	fmt.Fprintf(stdout, "%s: ok (%d listeners, %d clusters, %d endpoints)\n", cfg.File, len(cfg.Listeners), len(cfg.Clusters), endpoints)
	return 0
}

// loadConfig parses a subcommand's --config flag and loads the file. On
// failure it prints the errors, one per line (FILE:LINE:COL: path: message),
// and returns a nil config with the exit code: 2 for bad flags, 1 for a bad
// file.
func loadConfig(name string, args []string, stderr io.Writer) (*config.Config, int) {
	return loadConfigWith(new(config.Parser), name, args, stderr)
}

// loadConfigWith is loadConfig through parser, which then remembers the
// file's items for the reloads that follow.
func loadConfigWith(parser *config.Parser, name string, args []string, stderr io.Writer) (*config.Config, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration `FILE`")
	if err := fs.Parse(args); err != nil {
		return nil, 2
	}
	cfg, err := parser.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, strings.Join(config.ErrorLines(err), "\n"))
		return nil, 1
	}
	return cfg, 0
}
