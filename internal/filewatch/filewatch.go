// Package filewatch notices when a configuration file's content changes,
// however it was changed: written in place, replaced by a rename (what most
// editors do), or swapped through a symlink (Kubernetes ConfigMap volumes
// point config.yaml at ..data/config.yaml and atomically repoint ..data).
//
// It watches the directories holding the file and its symlink targets, not
// the file itself: a watch on a file follows its inode, which a rename or a
// symlink swap leaves behind. Events are debounced (a steady stream of them
// still gets a look every ten debounces), and the callback runs
// only when the bytes actually differ from the last ones seen, so a storm of
// writes, or a touch, does not turn into a storm of reloads.
package filewatch

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches one file.
type Watcher struct {
	path     string
	debounce time.Duration
	log      *slog.Logger
	fsw      *fsnotify.Watcher
	dirs     map[string]bool
	last     [sha256.Size]byte
	known    bool
}

// New starts watching path. The content the file has now counts as seen:
// only later changes are reported.
func New(path string, debounce time.Duration, log *slog.Logger) (*Watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", path, err)
	}
	w := &Watcher{path: path, debounce: debounce, log: log, fsw: fsw, dirs: map[string]bool{}}
	if err := w.watchDirs(); err != nil {
		_ = fsw.Close()
		return nil, err
	}
	w.last, w.known = w.hash()
	return w, nil
}

// watchDirs adds the directory of the path and of every symlink on the way
// to the real file; symlinks may be repointed, so this runs after each event.
func (w *Watcher) watchDirs() error {
	p := w.path
	for range 16 { // bounds a symlink loop
		dir := filepath.Dir(p)
		if !w.dirs[dir] {
			if err := w.fsw.Add(dir); err != nil {
				return fmt.Errorf("watch directory %s: %w", dir, err)
			}
			w.dirs[dir] = true
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

func (w *Watcher) hash() ([sha256.Size]byte, bool) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return [sha256.Size]byte{}, false
	}
	return sha256.Sum256(data), true
}

// maxWaitFactor bounds how long a burst of events can postpone a look at
// the file: maxWaitFactor debounces after its first event, however steady
// the stream of writes.
const maxWaitFactor = 10

// Run calls changed each time the file's content changes, until ctx is
// done; then it releases the watch. changed runs on Run's goroutine, so a
// slow reload delays the next check instead of overlapping it.
func (w *Watcher) Run(ctx context.Context, changed func()) {
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
			w.log.Warn("config watch error", "file", w.path, "err", err)
		case _, ok := <-w.fsw.Events:
			if !ok {
				return
			}
			// Any event in a watched directory may concern the file
			// (its name, a symlink on the way, a temporary file renamed
			// over it): look again once things have settled, but not
			// later than maxWaitFactor debounces after the first event,
			// so that a steady stream of writes cannot starve reloads.
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
			if err := w.watchDirs(); err != nil && !errors.Is(err, fs.ErrNotExist) {
				w.log.Warn("config watch", "file", w.path, "err", err)
			}
			sum, ok := w.hash()
			if !ok {
				// Deleted or mid-swap: wait for it to come back rather
				// than reload an absent file.
				continue
			}
			if w.known && sum == w.last {
				continue
			}
			w.last, w.known = sum, true
			changed()
		}
	}
}
