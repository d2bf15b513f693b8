// Package filewatch notices when the content of a file (the configuration,
// a certificate or key) changes, however it was changed: written in place,
// replaced by a rename (what most editors do), or swapped through a symlink
// (Kubernetes ConfigMap and Secret volumes point config.yaml at
// ..data/config.yaml and atomically repoint ..data).
//
// It watches the directories holding the files and their symlink targets,
// not the files themselves: a watch on a file follows its inode, which a
// rename or a symlink swap leaves behind. Events are debounced (a steady
// stream of them still gets a look every ten debounces), and the callback
// runs only when the bytes of a file actually differ from the last ones
// seen, so a storm of writes, or a touch, does not turn into a storm of
// reloads.
package filewatch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches a set of files (one for the configuration; the
// certificate, key and CA files of the TLS settings) with one inotify
// instance, whatever their number.
type Watcher struct {
	debounce time.Duration
	log      *slog.Logger
	fsw      *fsnotify.Watcher

	// mu guards the set; Set may run while Run looks at the files.
	mu    sync.Mutex
	files map[string]*seen
	dirs  map[string]bool
}

// seen is the content a file had at the last look.
type seen struct {
	sum   [sha256.Size]byte
	known bool
}

// New starts watching path. The content the file has now counts as seen:
// only later changes are reported.
func New(path string, debounce time.Duration, log *slog.Logger) (*Watcher, error) {
	return NewSet([]string{path}, debounce, log)
}

// NewSet starts watching the files at paths, as New does one.
func NewSet(paths []string, debounce time.Duration, log *slog.Logger) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", strings.Join(paths, ", "), err)
	}
	w := &Watcher{debounce: debounce, log: log, fsw: fsw, files: map[string]*seen{}, dirs: map[string]bool{}}
	if err := w.Set(paths); err != nil {
		_ = fsw.Close()
		return nil, err
	}
	return w, nil
}

// Set makes paths the watched set. A path already watched keeps what was
// seen of it; a new one counts as seen as it is now. Directories no file
// of the set needs any more are released.
func (w *Watcher) Set(paths []string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	files := make(map[string]*seen, len(paths))
	for _, p := range paths {
		if f := w.files[p]; f != nil {
			files[p] = f
			continue
		}
		f := &seen{}
		f.sum, f.known = hash(p)
		files[p] = f
	}
	w.files = files
	dirs := map[string]bool{}
	var errs []error
	for p := range files {
		if err := w.watchDirsLocked(p, dirs); err != nil {
			errs = append(errs, err)
		}
	}
	for d := range w.dirs {
		if !dirs[d] {
			_ = w.fsw.Remove(d)
		}
	}
	w.dirs = dirs
	return errors.Join(errs...)
}

// watchDirsLocked adds the directory of path and of every symlink on the
// way to the real file to dirs, watching those not watched yet; symlinks
// may be repointed, so this runs after each event.
func (w *Watcher) watchDirsLocked(path string, dirs map[string]bool) error {
	p := path
	for range 16 { // bounds a symlink loop
		dir := filepath.Dir(p)
		// A directory reached through a symlink (..data/tls.crt) is
		// watched as the real directory too: once ..data is repointed,
		// writes go to another directory, which must be watched anew.
		watch := []string{dir}
		if real, err := filepath.EvalSymlinks(dir); err == nil && real != dir {
			watch = append(watch, real)
		}
		for _, d := range watch {
			if dirs[d] {
				continue
			}
			if !w.dirs[d] {
				if err := w.fsw.Add(d); err != nil {
					return fmt.Errorf("watch directory %s: %w", d, err)
				}
				w.dirs[d] = true
			}
			dirs[d] = true
		}
		target, err := os.Readlink(p)
		if err != nil {
			return nil // not a symlink (or gone for now): p is the end
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(dir, target)
		}
		p = target
	}
	return nil
}

func hash(path string) ([sha256.Size]byte, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(data), true
}

// maxWaitFactor bounds how long a burst of events can postpone a look at
// the files: maxWaitFactor debounces after its first event, however
// steady the stream of writes.
const maxWaitFactor = 10

// Run calls changed each time the content of a watched file changes, until
// ctx is done; then it releases the watch. changed runs on Run's
// goroutine, so a slow reload delays the next check instead of overlapping
// it.
func (w *Watcher) Run(ctx context.Context, changed func()) {
	w.RunFiles(ctx, func([]string) { changed() })
}

// RunFiles is Run, telling changed which files changed (sorted).
func (w *Watcher) RunFiles(ctx context.Context, changed func(paths []string)) {
	defer w.fsw.Close()
	var timer *time.Timer
	var fire <-chan time.Time
	var burst time.Time // the first event since the last look
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return
			}
			w.log.Warn("file watch error", "files", w.paths(), "err", err)
		case _, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			// Any event in a watched directory may concern a file (its
			// name, a symlink on the way, a temporary file renamed over
			// it): look again once things have settled, but not later
			// than maxWaitFactor debounces after the first event, so that
			// a steady stream of writes cannot starve reloads.
			now := time.Now()
			if fire == nil {
				burst = now
			}
			wait := max(min(w.debounce, burst.Add(maxWaitFactor*w.debounce).Sub(now)), 0)
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		case <-fire:
			fire = nil
			if paths := w.look(); len(paths) > 0 {
				changed(paths)
			}
		}
	}
}

// look re-reads every file and returns those whose bytes changed. A file
// that is absent (deleted, or mid-swap) is not a change: it is looked at
// again when it comes back.
func (w *Watcher) look() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	dirs := map[string]bool{}
	var changed []string
	for p, f := range w.files {
		if err := w.watchDirsLocked(p, dirs); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.log.Warn("file watch", "file", p, "err", err)
		}
		sum, ok := hash(p)
		if !ok || (f.known && sum == f.sum) {
			continue
		}
		f.sum, f.known = sum, true
		changed = append(changed, p)
	}
	// Directories of old symlink targets stay watched until Set: they are
	// usually deleted right after a swap, which ends their watch anyway.
	for d := range dirs {
		w.dirs[d] = true
	}
	slices.Sort(changed)
	return changed
}

func (w *Watcher) paths() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Sorted(maps.Keys(w.files))
}
