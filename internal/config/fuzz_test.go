package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds the loader arbitrary bytes, seeded with the real
// configurations of testdata/ and config.example.yaml. It must never panic;
// a failure is always an ErrorList with positions; a success satisfies every
// invariant a Config promises. Crashers found go to testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range append(seeds, "../../config.example.yaml") {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("log: &a {<<: *a}\n"))
	f.Add([]byte("listeners: &l [*l]\n"))
	f.Add([]byte("clusters: [{name: c, endpoints: [{address: \"[::1]:1\"}], health_check: {jitter: 99.9%}}]\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("a config along with an error")
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
			}
			for i, e := range list {
				if e.File != "fuzz.yaml" || e.Line < 1 || e.Col < 1 || e.Msg == "" || strings.ContainsAny(e.Error(), "\r\n") {
					t.Fatalf("bad error %#v", e)
				}
				if i > 0 && (e.Line < list[i-1].Line || e.Line == list[i-1].Line && e.Col < list[i-1].Col) {
					t.Fatalf("errors not sorted: %v", list)
				}
			}
			return
		}
		if cfg.File != "fuzz.yaml" {
			t.Fatalf("File = %q", cfg.File)
		}
		checkInvariants(t, cfg)
	})
}
