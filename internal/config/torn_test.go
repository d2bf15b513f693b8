package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A file written in place can be read half written: the integration chaos
// suite's reload storm does that hundreds of times a second. Every prefix
// of a real configuration must load as a valid configuration or fail with
// positioned errors, never panic or half-apply.
func TestEveryPrefixOfARealConfigLoadsOrFailsCleanly(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range append(files, "../../config.example.yaml") {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for n := range len(data) + 1 {
			cfg, err := Parse("torn.yaml", data[:n])
			if err == nil {
				checkInvariants(t, cfg)
				continue
			}
			var list ErrorList
			if cfg != nil || !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("%s cut at byte %d: config %v, error %v; want an ErrorList and no config", path, n, cfg != nil, err)
			}
			for _, e := range list {
				if e.File != "torn.yaml" || e.Line < 1 || e.Col < 1 || e.Msg == "" {
					t.Fatalf("%s cut at byte %d: error without a position: %#v", path, n, e)
				}
			}
		}
	}
}
