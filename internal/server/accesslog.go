package server

import (
	"fmt"
	"time"

	"github.com/vigil-proxy/vigil/internal/accesslog"
	"github.com/vigil-proxy/vigil/internal/config"
)

// accessLogPath is where a listener's access log goes: stdout, stderr,
// or its file resolved against the configuration's directory.
func accessLogPath(cfg *config.Config, a config.AccessLog) string {
	if a.Path == accesslog.Stdout || a.Path == accesslog.Stderr {
		return a.Path
	}
	return cfg.FilePath(a.Path)
}

// openAccessLogs returns the sinks cfg's listeners write to, by path:
// those already open are kept (a reload that leaves a path alone loses no
// record and keeps its file), the others are opened. On failure nothing
// opened stays open and the error points at the path. The caller holds mu.
func (s *Server) openAccessLogs(cfg *config.Config) (map[string]*accesslog.Sink, error) {
	sinks := map[string]*accesslog.Sink{}
	var opened []*accesslog.Sink
	var errs config.ErrorList
	for i, l := range cfg.Listeners {
		if !l.AccessLog.On() {
			continue
		}
		path := accessLogPath(cfg, l.AccessLog)
		if sinks[path] != nil {
			continue
		}
		if old := s.accessLogs[path]; old != nil {
			sinks[path] = old
			continue
		}
		sink, err := accesslog.Open(path, accesslog.Options{Buffer: l.AccessLog.Buffer, Logger: s.log})
		if err != nil {
			errs = append(errs, cfg.Errorf(l.AccessLog.PathPos, fmt.Sprintf("listeners[%d].access_log.path", i), "%w", err))
			continue
		}
		sinks[path] = sink
		opened = append(opened, sink)
	}
	if len(errs) > 0 {
		for _, sink := range opened {
			sink.Close()
		}
		return nil, errs
	}
	return sinks, nil
}

// closeNewAccessLogs closes the sinks of sinks that were not open before:
// apply failed after opening them.
func (s *Server) closeNewAccessLogs(sinks map[string]*accesslog.Sink) {
	for path, sink := range sinks {
		if s.accessLogs[path] != sink {
			sink.Close()
		}
	}
}

// accessLogger is listener l's handle on its sink, nil when its access log
// is off.
func (s *Server) accessLogger(cfg *config.Config, l config.Listener, sinks map[string]*accesslog.Sink) *accesslog.Logger {
	if !l.AccessLog.On() {
		return nil
	}
	format, err := accesslog.ParseFormat(string(l.AccessLog.Format))
	if err != nil {
		// The configuration allows json and text only.
		format = accesslog.JSON
	}
	return sinks[accessLogPath(cfg, l.AccessLog)].Logger(l.Name, format, s.metrics.m.AccessLogDropped(l.Name))
}

// swapAccessLogs makes sinks the open ones and retires those no listener
// writes to any more: a listener being retired may still log its last
// RPCs to one, so it is closed once those have had shutdown.timeout (and
// a second) to finish. The caller holds mu.
func (s *Server) swapAccessLogs(sinks map[string]*accesslog.Sink, timeout time.Duration) {
	for path, sink := range s.accessLogs {
		if sinks[path] == sink {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			t := time.NewTimer(timeout + time.Second)
			defer t.Stop()
			select {
			case <-t.C:
			case <-s.quit:
			}
			sink.Close()
		}()
	}
	s.accessLogs = sinks
}

// ReopenAccessLogs reopens every access log file (SIGUSR1, after
// logrotate moved them): records not yet written go to the new files.
func (s *Server) ReopenAccessLogs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sink := range s.accessLogs {
		sink.Reopen()
	}
	if len(s.accessLogs) > 0 {
		s.log.Info("reopening access logs", "files", len(s.accessLogs))
	}
}
