package server

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vigil-proxy/vigil/internal/config"
)

// TestReloadFileThroughParser reloads a file edited in place several times
// (one item changed, lines inserted before the items, an invalid version)
// and checks that what runs is each time exactly what config.Load makes of
// the file, and that the invalid version changes nothing.
func TestReloadFileThroughParser(t *testing.T) {
	s := newServer(t)
	defer s.Shutdown(context.Background())
	first := churnConfig("127.0.0.1:1", nil)
	if err := s.Start(parse(t, first)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "vigil.yaml")
	unprobed := strings.ReplaceAll(churnConfig("127.0.0.1:1", []string{"127.0.0.1:2", "127.0.0.1:3"}),
		"interval: 100ms\n      timeout: 100ms", "mode: none")
	versions := []string{
		unprobed,
		strings.Replace(unprobed, "127.0.0.1:3", "127.0.0.1:4", 1),
		"# inserted\nlog:\n  level: warn\n" + strings.Replace(unprobed, "127.0.0.1:3", "127.0.0.1:4", 1),
		first,
	}
	for i, v := range versions {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.ReloadFile(path); err != nil {
			t.Fatalf("version %d: %v", i, err)
		}
		want, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Config(); !reflect.DeepEqual(got, want) {
			t.Fatalf("version %d: running %+v, want %+v", i, got, want)
		}
	}

	before := s.Config()
	bad := strings.Replace(first, "cluster: base", "cluster: nowhere", 1)
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	err := s.ReloadFile(path)
	_, wantErr := config.Load(path)
	if err == nil || wantErr == nil || err.Error() != wantErr.Error() {
		t.Fatalf("invalid version: error %v, want %v", err, wantErr)
	}
	if s.Config() != before {
		t.Fatal("an invalid version changed the configuration in force")
	}
}
