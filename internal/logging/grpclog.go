package logging

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"google.golang.org/grpc/grpclog"
)

// RouteGRPC sends grpc-go's internal logging through logger. gRPC's INFO and
// WARNING lines are connection chatter (every failed reconnect to a dead
// backend is a WARNING) that vigil already reports in its own terms, so they
// go to DEBUG; gRPC's ERROR becomes WARN. Call it once, before any gRPC
// activity: grpclog.SetLoggerV2 is not safe for concurrent use.
func RouteGRPC(logger *slog.Logger) {
	grpclog.SetLoggerV2(&grpcLogger{l: logger.With(slog.String("component", "grpc"))})
}

type grpcLogger struct {
	l *slog.Logger
}

func (g *grpcLogger) log(level slog.Level, msg string) {
	g.l.Log(context.Background(), level, msg)
}

func (g *grpcLogger) Info(args ...any) { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g *grpcLogger) Infoln(args ...any) {
	g.log(slog.LevelDebug, strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
}
func (g *grpcLogger) Infof(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g *grpcLogger) Warning(args ...any) { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g *grpcLogger) Warningln(args ...any) {
	g.log(slog.LevelDebug, strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
}
func (g *grpcLogger) Warningf(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g *grpcLogger) Error(args ...any) { g.log(slog.LevelWarn, fmt.Sprint(args...)) }
func (g *grpcLogger) Errorln(args ...any) {
	g.log(slog.LevelWarn, strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
}
func (g *grpcLogger) Errorf(format string, args ...any) {
	g.log(slog.LevelWarn, fmt.Sprintf(format, args...))
}
func (g *grpcLogger) Fatal(args ...any) {
	g.log(slog.LevelError, fmt.Sprint(args...))
	os.Exit(1)
}
func (g *grpcLogger) Fatalln(args ...any) {
	g.log(slog.LevelError, strings.TrimSuffix(fmt.Sprintln(args...), "\n"))
	os.Exit(1)
}
func (g *grpcLogger) Fatalf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
	os.Exit(1)
}

// V reports whether gRPC's verbosity level l is on; only debug logging
// shows gRPC's verbose lines.
func (g *grpcLogger) V(l int) bool {
	return g.l.Enabled(context.Background(), slog.LevelDebug-slog.Level(l))
}
