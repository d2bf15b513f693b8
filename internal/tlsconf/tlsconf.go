// Package tlsconf turns the tls sections of vigil's configuration into
// crypto/tls configurations and keeps them current while the files they
// name change: a Store watches every certificate, key and CA file in use
// (one filewatch.Watcher, whatever their number) and, when one changes,
// reloads what names it. A pair or CA file that does not load is logged as
// `tls reload rejected` (ERROR, with the file and the error) and the
// previous one keeps serving; a good one replaces it for the next
// handshake, and connections already established are left alone.
//
// What uses a configuration reads it with one atomic load per handshake
// (Server.Config, Client.ClientConfig); the *tls.Config it gets is never
// modified. A Server is a listener's (the certificates it serves, the CA
// it verifies clients with); a Client a cluster's (the CA it verifies
// endpoints with, the certificate it presents to them).
//
// Goroutines: Store.Start starts one that watches and reloads, which its
// stop function ends and waits for; the Store's owner (the server) calls
// it. Nothing else here starts one. Lock order: Store.mu,
// then a source's mu.
package tlsconf

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/vigil-proxy/vigil/internal/filewatch"
)

// DefaultDebounce lets the writes of a rotation (a certificate, then its
// key) settle into one reload.
const DefaultDebounce = 100 * time.Millisecond

// Options configure a Store.
type Options struct {
	Logger *slog.Logger
	// Debounce is how long file events settle; zero: DefaultDebounce.
	Debounce time.Duration
	// Now is the clock for validity checks; nil: time.Now.
	Now func() time.Time
}

// Store owns the file watch of every TLS source it made.
type Store struct {
	log      *slog.Logger
	now      func() time.Time
	debounce time.Duration

	mu      sync.Mutex
	w       *filewatch.Watcher // nil until Start
	sources map[source]struct{}
}

// source is a Server or a Client: something built from files that
// reloads.
type source interface {
	files() []string
	reload(changed []string)
}

// New returns a Store watching nothing yet; Start watches.
func New(opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Store{log: opts.Logger, now: opts.Now, debounce: opts.Debounce, sources: map[source]struct{}{}}
}

// Start starts watching the files of the sources, and returns once the
// watch is in place; stop ends it and waits for its goroutine. Without
// file watching (no inotify instance left), the sources still serve; their
// files then reload only with the configuration, as the warning logged
// says.
func (s *Store) Start() (stop func()) {
	w, err := filewatch.NewSet(nil, s.debounce, s.log)
	if err != nil {
		s.log.Warn("cannot watch TLS files; certificates will reload only with the configuration", "err", err)
		return func() {}
	}
	s.mu.Lock()
	s.w = w
	s.rewatchLocked()
	srcs := s.sourcesLocked()
	s.mu.Unlock()
	// What changed between a source's loading and the watch's first look
	// would never be reported: look now.
	for _, src := range srcs {
		src.reload(src.files())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.RunFiles(ctx, func(changed []string) {
			s.mu.Lock()
			srcs := s.sourcesLocked()
			s.mu.Unlock()
			for _, src := range srcs {
				src.reload(changed)
			}
		})
	}()
	return func() {
		cancel()
		<-done
	}
}

func (s *Store) sourcesLocked() []source {
	srcs := make([]source, 0, len(s.sources))
	for src := range s.sources {
		srcs = append(srcs, src)
	}
	return srcs
}

func (s *Store) add(src source) {
	s.mu.Lock()
	s.sources[src] = struct{}{}
	s.rewatchLocked()
	s.mu.Unlock()
	// A change between loading and the watch's first look at the files
	// would be missed.
	src.reload(src.files())
}

func (s *Store) remove(src source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sources, src)
	s.rewatchLocked()
}

func (s *Store) rewatchLocked() {
	if s.w == nil {
		return
	}
	var paths []string
	for src := range s.sources {
		paths = append(paths, src.files()...)
	}
	slices.Sort(paths)
	if err := s.w.Set(slices.Compact(paths)); err != nil {
		s.log.Warn("cannot watch TLS files; they will not reload until the configuration changes", "err", err)
	}
}

// Cert describes a certificate in use, for metrics and logs.
type Cert struct {
	File     string
	NotAfter time.Time
}
