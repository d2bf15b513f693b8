package filewatch

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// watch runs a watcher on path and returns a channel that receives one
// value per reported change.
func watch(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	w, err := New(path, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.Run(ctx, func() { changes <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return changes
}

func expectChange(t *testing.T, changes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatalf("no change reported after %s", what)
	}
}

func expectQuiet(t *testing.T, changes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-changes:
		t.Fatalf("a change was reported after %s", what)
	case <-time.After(200 * time.Millisecond):
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteInPlaceAndRenameOver(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vigil.yaml")
	write(t, path, "a")
	changes := watch(t, path)

	write(t, path, "b")
	expectChange(t, changes, "a write in place")

	write(t, path, "b")
	expectQuiet(t, changes, "rewriting the same bytes")

	tmp := filepath.Join(dir, ".vigil.yaml.swp")
	write(t, tmp, "c")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, "a rename over the file")

	write(t, path, "d") // the watch survives the rename
	expectChange(t, changes, "a write after the rename")
}

func TestStormIsDebounced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	write(t, path, "0")
	changes := watch(t, path)
	for i := range 200 {
		write(t, path, string(rune('a'+i%26)))
	}
	expectChange(t, changes, "a storm of writes")
	time.Sleep(100 * time.Millisecond)
	if n := len(changes); n > 2 {
		t.Fatalf("%d changes reported for one storm; want it collapsed", n+1)
	}
}

// TestConfigMapSymlinkSwap does what the kubelet does to a ConfigMap
// volume: config.yaml -> ..data/config.yaml, ..data -> ..TIMESTAMP, and an
// update repoints ..data atomically by renaming a new symlink over it.
func TestConfigMapSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	mustMkdir := func(p string) {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustSymlink := func(target, link string) {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	mustMkdir(filepath.Join(dir, "..v1"))
	write(t, filepath.Join(dir, "..v1", "config.yaml"), "v1")
	mustSymlink("..v1", filepath.Join(dir, "..data"))
	mustSymlink(filepath.Join("..data", "config.yaml"), filepath.Join(dir, "config.yaml"))
	changes := watch(t, filepath.Join(dir, "config.yaml"))

	mustMkdir(filepath.Join(dir, "..v2"))
	write(t, filepath.Join(dir, "..v2", "config.yaml"), "v2")
	mustSymlink("..v2", filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "..v1")); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, "the ..data symlink swap")
}

func TestDeletedFileIsNotAChangeUntilItReturns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vigil.yaml")
	write(t, path, "a")
	changes := watch(t, path)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	expectQuiet(t, changes, "deleting the file")
	write(t, path, "b")
	expectChange(t, changes, "the file coming back")
}

// TestSetOfFiles: one watcher reports which of its files changed, a file
// added by Set counts as seen as it is, and a file dropped by Set is no
// longer reported.
func TestSetOfFiles(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.crt"), filepath.Join(dir, "sub", "b.key"), filepath.Join(dir, "c.pem")
	if err := os.Mkdir(filepath.Dir(b), 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, a, "a")
	write(t, b, "b")
	write(t, c, "c")
	w, err := NewSet([]string{a, b}, 20*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan []string, 100)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { w.RunFiles(ctx, func(p []string) { changes <- p }) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	expect := func(want ...string) {
		t.Helper()
		select {
		case got := <-changes:
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("changed %v, want %v", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change reported, want %v", want)
		}
	}
	write(t, b, "b2")
	expect(b)
	write(t, a, "a2")
	write(t, b, "b3")
	expect(a, b)
	if err := w.Set([]string{a, c}); err != nil {
		t.Fatal(err)
	}
	write(t, b, "b4")
	select {
	case got := <-changes:
		t.Fatalf("a file dropped from the set was reported: %v", got)
	case <-time.After(200 * time.Millisecond):
	}
	write(t, c, "c2")
	expect(c)
}

// TestWriteInPlaceAfterSymlinkSwap: after ..data is repointed, a write in
// place into the new target directory (through the symlinks) is seen.
func TestWriteInPlaceAfterSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"..v1", "..v2"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, d, "tls.crt"), d)
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/tls.crt", filepath.Join(dir, "tls.crt")); err != nil {
		t.Fatal(err)
	}
	changes := watch(t, filepath.Join(dir, "tls.crt"))
	if err := os.Symlink("..v2", filepath.Join(dir, "..tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	expectChange(t, changes, "the swap")
	write(t, filepath.Join(dir, "..v2", "tls.crt"), "v2 rewritten")
	expectChange(t, changes, "a write in place into the new target")
}
