package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/logging"
	"github.com/vigil-proxy/vigil/internal/server"
	"github.com/vigil-proxy/vigil/internal/state"
)

func runCmd(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("vigil run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration `FILE`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}

	store, err := state.New()
	if err != nil {
		printConfigErrors(stderr, err)
		return 1
	}
	logs := logging.NewSwitch(stderr, cfg.Log.Format, logging.ParseLevel(cfg.Log.Level))
	logger := slog.New(logging.Tee(logs.Handler(), store))
	logging.RouteGRPC(logger)

	// Signals are caught before anything starts, so that a SIGTERM during
	// start-up still means a clean stop.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	srv := server.New(server.Options{Logs: logs, Logger: logger, Store: store})
	logger.LogAttrs(context.Background(), slog.LevelInfo, "config loaded", cfg.Attrs()...)
	if err := srv.Start(cfg); err != nil {
		logger.Error("cannot start", "errors", errorLines(err))
		return 1
	}
	logger.Info("vigil running", "version", version, "pid", os.Getpid())

	var sig os.Signal
	for sig = range signals {
		if sig != syscall.SIGHUP {
			break
		}
		logger.Info("reloading on SIGHUP", "file", *path)
		_ = srv.ReloadFile(*path) // logged as config reloaded or config rejected
	}

	logger.Info("shutting down", "signal", sig.String())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{})
	hurry := make(chan struct{})
	go func() {
		defer close(hurry)
		select {
		case sig := <-signals:
			logger.Warn("second signal: cutting work in flight", "signal", sig.String())
			cancel()
		case <-stopped:
		}
	}()
	srv.Shutdown(ctx)
	close(stopped)
	<-hurry
	logger.Info("stopped")
	return 0
}

func errorLines(err error) []string {
	var list config.ErrorList
	if errors.As(err, &list) {
		lines := make([]string, len(list))
		for i, e := range list {
			lines[i] = e.Error()
		}
		return lines
	}
	return []string{err.Error()}
}
