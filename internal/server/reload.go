package server

import (
	"log/slog"

	"github.com/vigil-proxy/vigil/internal/config"
)

// ReloadFile loads the configuration at path and applies it. It logs one
// `config reloaded` record with what changed, or one `config rejected`
// record with every error, in which case the configuration in force keeps
// serving untouched.
func (s *Server) ReloadFile(path string) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, err := config.Load(path)
	if err != nil {
		s.reject(path, err)
		return err
	}
	changes := config.Diff(s.Config(), cfg)
	if err := s.Reload(cfg); err != nil {
		s.reject(path, err)
		return err
	}
	s.metrics.reload(true)
	attrs := append([]slog.Attr{slog.String("file", path), slog.Bool("unchanged", changes.Empty())}, changes.Attrs()...)
	s.log.LogAttrs(s.ctx, slog.LevelInfo, "config reloaded", attrs...)
	return nil
}

func (s *Server) reject(path string, err error) {
	s.metrics.reload(false)
	s.log.Error("config rejected", "file", path, "errors", config.ErrorLines(err), "kept", "the configuration in force keeps serving")
}
