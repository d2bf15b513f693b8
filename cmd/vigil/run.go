package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigil-proxy/vigil/internal/config"
	"github.com/vigil-proxy/vigil/internal/discovery"
	"github.com/vigil-proxy/vigil/internal/filewatch"
	"github.com/vigil-proxy/vigil/internal/gcfloor"
	"github.com/vigil-proxy/vigil/internal/logging"
	"github.com/vigil-proxy/vigil/internal/server"
	"github.com/vigil-proxy/vigil/internal/state"
)

func runCmd(args []string, _, stderr io.Writer) int {
	parser := new(config.Parser)
	cfg, code := loadConfigWith(parser, "vigil run", args, stderr)
	if cfg == nil {
		return code
	}
	// Reloads read the file named on the command line, whatever it holds.
	path := cfg.File

	store, err := state.New()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	logs := logging.NewSwitch(stderr, cfg.Log.Format, logging.ParseLevel(cfg.Log.Level))
	logger := slog.New(logs.Handler())
	logging.RouteGRPC(logger)
	// client-go (Kubernetes discovery) logs through klog: into vigil's log.
	discovery.SetClientLogger(logger)

	// Signals are caught before anything starts, so that a SIGTERM during
	// start-up still means a clean stop.
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(signals)

	srv := server.New(server.Options{Logs: logs, Logger: logger, Store: store, Version: version, Parser: parser})
	srv.LogLoaded(cfg)
	if err := srv.Start(cfg); err != nil {
		logger.Error("cannot start", "errors", config.ErrorLines(err))
		return 1
	}
	logger.Info("vigil running", "version", version, "pid", os.Getpid())

	// The data paths' live heap is small and their allocation steady: a
	// floor under the collector's heap goal spares them collections.
	gcCtx, stopGC := context.WithCancel(context.Background())
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		gcfloor.Run(gcCtx, gcfloor.Floor)
	}()
	defer func() {
		stopGC()
		<-gcDone
	}()

	// Reload when the file changes, however it was changed.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	if w, err := filewatch.New(path, reloadDebounce, logger); err != nil {
		logger.Warn("cannot watch the config file; reload with SIGHUP", "file", path, "err", err)
		close(watchDone)
	} else {
		go func() {
			defer close(watchDone)
			w.Run(watchCtx, func() {
				logger.Info("config file changed", "file", path)
				_ = srv.ReloadFile(path)
			})
		}()
	}

	var sig os.Signal
	for sig = range signals {
		if sig == syscall.SIGUSR1 {
			// logrotate moved the access logs: reopen them by name.
			srv.ReopenAccessLogs()
			continue
		}
		if sig != syscall.SIGHUP {
			break
		}
		logger.Info("reloading on SIGHUP", "file", path)
		_ = srv.ReloadFile(path) // logged as config reloaded or config rejected
	}

	logger.Info("shutting down", "signal", sig.String())
	stopWatch()
	<-watchDone
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{})
	hurry := make(chan struct{})
	go func() {
		defer close(hurry)
		for {
			select {
			case sig := <-signals:
				if sig == syscall.SIGUSR1 {
					srv.ReopenAccessLogs()
					continue
				}
				logger.Warn("second signal: cutting work in flight", "signal", sig.String())
				cancel()
			case <-stopped:
			}
			return
		}
	}()
	srv.Shutdown(ctx)
	close(stopped)
	<-hurry
	logger.Info("stopped")
	return 0
}

// reloadDebounce lets a burst of writes to the config file settle into one
// reload.
const reloadDebounce = 25 * time.Millisecond
