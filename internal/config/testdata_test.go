package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/*.errors from the current output")

// TestTestdata loads every configuration under testdata/: each good one must
// load, each bad one must fail with exactly the lines of its .errors file.
func TestTestdata(t *testing.T) {
	good, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil || len(good) == 0 {
		t.Fatalf("no good configs: %v", err)
	}
	for _, path := range good {
		t.Run(path, func(t *testing.T) {
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, cfg)
		})
	}

	bad, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(bad) == 0 {
		t.Fatalf("no bad configs: %v", err)
	}
	for _, path := range bad {
		t.Run(path, func(t *testing.T) {
			_, err := Load(path)
			if err == nil {
				t.Fatal("loaded without error")
			}
			golden := strings.TrimSuffix(path, ".yaml") + ".errors"
			if *update {
				if err := os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, readErr := os.ReadFile(golden)
			if readErr != nil {
				t.Fatal(readErr)
			}
			if got := err.Error() + "\n"; got != string(want) {
				t.Errorf("errors:\n%swant (%s):\n%s", got, golden, want)
			}
		})
	}
}
