package config

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// base is a small configuration in the shape splitSections handles: a
// skeleton, a listeners section and a clusters section, with comments.
const base = `# top comment
admin:
  address: 127.0.0.1:9901
log:
  level: info

listeners:   # the front doors
  - name: api
    address: 127.0.0.1:8080
    cluster: a

  # between listeners
  - name: tcp
    address: 127.0.0.1:8081
    protocol: tcp
    cluster: b
# before clusters
clusters:
  - name: a
    endpoints:
      - address: 10.0.0.1:1
      - address: 10.0.0.2:1
        weight: 3
  - name: b
    lb_policy: random
    endpoints: [{address: "10.0.1.1:1"}, {address: 10.0.1.2:1, weight: 2}]
    health_check:
      service: "a quoted
        service spanning lines"
  - name: c
    endpoints:
    - address: 10.0.2.1:1
    health_check:
      mode: watch
      service: |
        block
        scalar
      interval: 3s
shutdown:
  timeout: 20s
`

// edits are versions of base, in the ways a file changes between reloads.
var edits = []struct {
	name string
	data string
	// items: splitSections must accept it and parseItems must succeed
	// (else it would fall back to Parse and prove nothing about the items).
	items bool
}{
	{"base", base, true},
	{"one endpoint", strings.Replace(base, "10.0.0.2:1", "10.0.0.3:1", 1), true},
	{"weight", strings.Replace(base, "weight: 3", "weight: 4", 1), true},
	{"lines inserted before items", strings.Replace(base, "log:\n", "# more\n\n# comment\nlog:\n  format: json\n", 1), true},
	{"lines removed before items", strings.Replace(base, "log:\n  level: info\n", "", 1), true},
	{"lines inserted in an item", strings.Replace(base, "    endpoints:\n      - address: 10.0.0.1:1\n", "    endpoints:\n      - address: 10.0.0.9:1\n      - address: 10.0.0.1:1\n", 1), true},
	{"cluster added", strings.Replace(base, "shutdown:", "  - name: d\n    endpoints:\n      - address: 10.0.3.1:1\nshutdown:", 1), true},
	{"cluster removed", base[:strings.Index(base, "  - name: c\n")] + "shutdown:\n  timeout: 20s\n", true},
	{"clusters reordered", reorderClusters(base), true},
	{"sections swapped", "clusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\nlisteners:\n  - name: l\n    address: :80\n    cluster: a\n", true},
	{"comments between items", strings.ReplaceAll(base, "  - name: ", "# c\n\n    # indented\n  - name: "), true},
	{"item indent 0", "clusters:\n- name: a\n  endpoints:\n  - address: 1.2.3.4:5\n- name: b\n  endpoints: [{address: 1.2.3.4:6}]\nlisteners:\n- name: l\n  address: :80\n  cluster: b\n", true},
	{"dash alone", "clusters:\n  -\n    name: a\n    endpoints:\n      -\n        address: 1.2.3.4:5\n", true},
	{"no final newline", strings.TrimSuffix("clusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\n", "\n"), true},
	{"trailing comment, no final newline", "clusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\n# end", true},
	{"block scalar changed", strings.Replace(base, "        scalar\n", "        scalar\n\n        more\n", 1), true},
	{"folded scalar", strings.Replace(base, "service: |", "service: >-", 1), true},
	{"quoted scalar changed", strings.Replace(base, "service spanning lines", "service\n\n        spanning more lines", 1), true},
	{"single-quoted", strings.Replace(base, `"a quoted`, `'a quoted`, 1) + "", false}, // unterminated: an error
	{"flow mapping item", "clusters:\n  - {name: a, endpoints: [{address: 1.2.3.4:5}]}\n  - {name: b,\n     endpoints: [\n       {address: 1.2.3.4:6}]}\n", true},
	{"skeleton only", "admin:\n  address: 127.0.0.1:1\nclusters: [{name: a, endpoints: [{address: 1.2.3.4:5}]}]\n", false},
	{"flow section, block section", "listeners: [{name: l, address: ':80', cluster: a}]\nclusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\n", false},
	{"block section, flow section", "clusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\nlisteners: [{name: l, address: ':80', cluster: a}]\n", false},
	{"admin after items", "clusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\nlisteners:\n  - name: l\n    address: 127.0.0.1:80\n    cluster: a\nadmin:\n  address: 127.0.0.1:80\n", false},

	// Falls back: not simple.
	{"anchors", "x: &e {address: 1.2.3.4:5}\nclusters:\n  - name: a\n    endpoints: [*e]\n", false},
	{"tab", "clusters:\n  - name: a\n    endpoints:\n\t- address: 1.2.3.4:5\n", false},
	{"crlf", strings.ReplaceAll(base, "\n", "\r\n"), false},
	{"document marker", "---\n" + base, false},
	{"two documents", base + "---\nlog: {}\n", false},
	{"directive", "%YAML 1.2\n---\n" + base, false},
	{"tag", strings.Replace(base, "weight: 3", "weight: !!int 3", 1), false},
	{"line separator", strings.Replace(base, "# between listeners", "# between\u2028listeners", 1), false},
	{"odd indentation", strings.Replace(base, "  - name: b\n", " - name: b\n", 1), false},
	{"not an item", strings.Replace(base, "  - name: c\n", "  x: 1\n  - name: c\n", 1), false},
	{"empty section", "clusters:\nlisteners:\n  - name: l\n    address: :80\n    cluster: a\n", false},

	// Errors: Parse's, whichever way they are found.
	{"duplicate cluster", strings.Replace(base, "name: c", "name: a", 1), false},
	{"unknown cluster", strings.Replace(base, "cluster: b", "cluster: z", 1), false},
	{"duplicate address", strings.Replace(base, "127.0.0.1:8081", "127.0.0.1:8080", 1), false},
	{"address of admin", strings.Replace(base, "127.0.0.1:8081", "127.0.0.1:9901", 1), false},
	{"bad field in item", strings.Replace(base, "lb_policy: random", "lb_polcy: random", 1), false},
	{"syntax error in item", strings.Replace(base, "weight: 3", "weight: [3", 1), false},
	{"syntax error in skeleton", strings.Replace(base, "level: info", "level: [info", 1), false},
	{"unknown top-level key", base + "extra: 1\n", false},
	{"duplicate section", base + "clusters:\n  - name: z\n    endpoints: [{address: 1.2.3.4:5}]\n", false},
	{"quote swallowing a key", "log:\n  level: \"info\nclusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\n\"\n", false},
	{"item continued at column 0", "clusters:\n  - name: \"a\nb\"\n    endpoints: [{address: 1.2.3.4:5}]\n", false},
	{"quote spanning items", "clusters:\n  - name: a\n    endpoints: [{address: 1.2.3.4:5}]\n    health_check: {service: \"x\n  - name: b\"}\n", false},
	{"empty", "", false},
	{"comments only", "# nothing\n", false},
}

// reorderClusters swaps the first two clusters of base.
func reorderClusters(s string) string {
	i := strings.Index(s, "  - name: a\n")
	j := strings.Index(s, "  - name: b\n")
	k := strings.Index(s, "  - name: c\n")
	return s[:i] + s[j:k] + s[i:j] + s[k:]
}

// corpus is every input of the differential tests: the edits, the testdata
// configurations, the example, and big configurations.
func corpus(t testing.TB) [][]byte {
	var all [][]byte
	for _, e := range edits {
		all = append(all, []byte(e.data))
	}
	paths, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range append(paths, "../../config.example.yaml") {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, data)
	}
	big := bigConfig(30, 4, false)
	all = append(all, big, bigConfig(30, 4, true),
		append([]byte("# shifted\nlog:\n  level: warn\n"), big...),
		bytes.Replace(big, []byte("  - name: c3\n"), []byte("  - name: c3x\n"), 1))
	return all
}

// sameResult fails unless the Parser's result is Parse's: the same Config
// (every position included) or the same error lines.
func sameResult(t testing.TB, what string, data []byte, got *Config, gotErr error) {
	t.Helper()
	want, wantErr := Parse("t.yaml", data)
	if len(data) > 2000 {
		data = append(data[:2000:2000], "..."...)
	}
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("%s: Parser error %v, Parse error %v\ninput:\n%s", what, gotErr, wantErr, data)
	case wantErr != nil:
		if g, w := ErrorLines(gotErr), ErrorLines(wantErr); !slices.Equal(g, w) {
			t.Fatalf("%s: Parser errors\n%s\nParse errors\n%s\ninput:\n%s", what, strings.Join(g, "\n"), strings.Join(w, "\n"), data)
		}
		if got != nil {
			t.Fatalf("%s: a config along with an error", what)
		}
	case !reflect.DeepEqual(got, want):
		t.Fatalf("%s: Parser and Parse differ: %s\ninput:\n%s", what, firstDifference(got, want), data)
	}
}

// TestParserMatchesParse parses every input of the corpus with a fresh
// Parser, with the same Parser again, and with Parsers warmed by other
// inputs, and compares with Parse.
func TestParserMatchesParse(t *testing.T) {
	all := corpus(t)
	for i, b := range all {
		var p Parser
		got, err := p.Parse("t.yaml", b)
		sameResult(t, fmt.Sprintf("input %d cold", i), b, got, err)
		// Twice: the second time from the cache.
		got, err = p.Parse("t.yaml", b)
		sameResult(t, fmt.Sprintf("input %d again", i), b, got, err)
		for j, a := range all {
			// Warmed by the neighbours (mostly edits of one another) and
			// a spread of the others: all pairs take too long under -race.
			if j != 0 && j != i-1 && j != i+1 && (i+j)%5 != 0 {
				continue
			}
			var p Parser
			_, _ = p.Parse("t.yaml", a)
			got, err := p.Parse("t.yaml", b)
			sameResult(t, fmt.Sprintf("input %d after %d", i, j), b, got, err)
		}
	}
}

// TestParserSplits checks that the edits meant to go item by item do, so
// that TestParserMatchesParse tests the items and not only the fallback.
func TestParserSplits(t *testing.T) {
	for _, e := range edits {
		t.Run(e.name, func(t *testing.T) {
			var p Parser
			cfg := p.parseItems([]byte(e.data))
			if e.items && cfg == nil {
				t.Errorf("parsed whole, not item by item")
			}
			if !e.items && cfg != nil {
				t.Errorf("parsed item by item")
			}
		})
	}
}

// TestParserCache checks that the reload of a big file where one endpoint
// changed parses only the item that holds it, and that the cache then holds
// exactly the items of the last version.
func TestParserCache(t *testing.T) {
	old, new := bigConfig(1000, 10, false), bigConfig(1000, 10, true)
	var p Parser
	if _, err := p.Parse("t.yaml", old); err != nil {
		t.Fatal(err)
	}
	if p.itemParses != 2000 {
		t.Fatalf("first parse: %d items parsed, want 2000", p.itemParses)
	}
	for i, data := range [][]byte{new, old, new} {
		before := p.itemParses
		got, err := p.Parse("t.yaml", data)
		if err != nil {
			t.Fatal(err)
		}
		if n := p.itemParses - before; n != 1 {
			t.Errorf("reload %d: %d items parsed, want 1", i, n)
		}
		if len(p.listeners) != 1000 || len(p.clusters) != 1000 {
			t.Errorf("cache holds %d listeners and %d clusters, want 1000 each", len(p.listeners), len(p.clusters))
		}
		sameResult(t, fmt.Sprintf("reload %d", i), data, got, err)
	}

	// Lines inserted at the top move every item: nothing is parsed again.
	shifted := append([]byte("# a comment\n\nlog:\n  level: warn\n"), new...)
	before := p.itemParses
	got, err := p.Parse("t.yaml", shifted)
	if n := p.itemParses - before; n != 0 {
		t.Errorf("shifted: %d items parsed, want 0", n)
	}
	sameResult(t, "shifted", shifted, got, err)
}

// TestParserKeepsCacheOnError checks that a rejected version leaves the
// cache as the last good version left it.
func TestParserKeepsCacheOnError(t *testing.T) {
	var p Parser
	if _, err := p.Parse("t.yaml", []byte(base)); err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(base, "cluster: b", "cluster: z", 1)
	if _, err := p.Parse("t.yaml", []byte(bad)); err == nil {
		t.Fatal("no error")
	}
	before := p.itemParses
	if _, err := p.Parse("t.yaml", []byte(base)); err != nil {
		t.Fatal(err)
	}
	if n := p.itemParses - before; n != 0 {
		t.Errorf("%d items parsed after a rejected version, want 0", n)
	}
}

// TestParserLoad checks Load's contract: the file name in Config.File and
// in errors, and the error for a missing file.
func TestParserLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	var p Parser
	got, err := p.Load(path)
	want, wantErr := Load(path)
	if err != nil || wantErr != nil || !reflect.DeepEqual(got, want) || got.File != path {
		t.Fatalf("Load = %+v, %v; want %+v, %v", got, err, want, wantErr)
	}
	missing := filepath.Join(dir, "missing.yaml")
	_, err = p.Load(missing)
	_, wantErr = Load(missing)
	if err == nil || !slices.Equal(ErrorLines(err), ErrorLines(wantErr)) {
		t.Fatalf("Load(missing) = %v, want %v", err, wantErr)
	}
}

// FuzzIncrementalMatchesParse warms a Parser with a, parses b with it and
// compares with Parse(b).
func FuzzIncrementalMatchesParse(f *testing.F) {
	// Small seeds only: the fuzzer's executions and minimizations of big
	// ones are slow and find nothing more.
	var all [][]byte
	for _, data := range corpus(f) {
		if len(data) <= 4096 {
			all = append(all, data)
		}
	}
	for i, a := range all {
		f.Add(a, a)
		f.Add(a, all[(i+1)%len(all)])
		f.Add(all[0], a)
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		var p Parser
		_, _ = p.Parse("t.yaml", a)
		got, err := p.Parse("t.yaml", b)
		sameResult(t, "after a", b, got, err)
	})
}

// BenchmarkParserReload reloads a file of n endpoints (n/10 clusters of 10
// and n/10 listeners) where one endpoint changed each time: with a Parser
// (items) and, for comparison, with Parse (whole).
func BenchmarkParserReload(b *testing.B) {
	for _, n := range []int{100, 1_000, 10_000} {
		versions := [2][]byte{bigConfig(n/10, 10, false), bigConfig(n/10, 10, true)}
		b.Run(fmt.Sprintf("endpoints=%d/items", n), func(b *testing.B) {
			var p Parser
			if _, err := p.Parse("big.yaml", versions[0]); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(versions[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := p.Parse("big.yaml", versions[i%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("endpoints=%d/whole", n), func(b *testing.B) {
			b.SetBytes(int64(len(versions[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if _, err := Parse("big.yaml", versions[i%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// firstDifference describes where two configurations first differ.
func firstDifference(got, want *Config) string {
	g, w := fmt.Sprintf("%+v", *got), fmt.Sprintf("%+v", *want)
	i := 0
	for i < len(g) && i < len(w) && g[i] == w[i] {
		i++
	}
	from := max(i-200, 0)
	return fmt.Sprintf("\ngot  ...%s\nwant ...%s", g[from:min(i+200, len(g))], w[from:min(i+200, len(w))])
}

// TestSkeletonLines checks fileLine: every line of a skeleton is the line
// of the file it says, but for the section keys, which gained " []".
func TestSkeletonLines(t *testing.T) {
	split := 0
	for i, data := range corpus(t) {
		if !simpleText(data) {
			continue
		}
		sections, ok := splitSections(data)
		if !ok {
			continue
		}
		split++
		skel := skeleton(data, sections)
		fileLines := strings.Split(string(data), "\n")
		keys := map[int]bool{}
		for _, s := range sections {
			keys[s.keyLine+1] = true
		}
		skelLines := strings.Split(string(skel), "\n")
		if skelLines[len(skelLines)-1] == "" {
			skelLines = skelLines[:len(skelLines)-1] // after the last newline
		}
		for k, text := range skelLines {
			line := fileLine(sections, k+1)
			want := fileLines[line-1]
			if keys[line] {
				want = strings.Replace(want, ":", ": []", 1)
			}
			if text != want {
				t.Fatalf("input %d: skeleton line %d %q is file line %d %q", i, k+1, text, line, fileLines[line-1])
			}
		}
	}
	if split < 20 {
		t.Errorf("only %d inputs split", split)
	}
}

// BenchmarkParserCold is the first parse of a Parser (every item parsed),
// the cost of a server's first reload; compare with BenchmarkParseBig.
func BenchmarkParserCold(b *testing.B) {
	data := bigConfig(1000, 10, false)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var p Parser
		if _, err := p.Parse("big.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

// lineVocabulary is what TestParserRandomLineEdits inserts: lines that
// start, end or continue items, quoted and block scalars, flow collections
// and keys, to be placed at random indentations.
var lineVocabulary = []string{
	"- name: x", "-", "- ", "# c", "", "   ", "name: y", "endpoints:", "- address: 1.2.3.4:5",
	"  - address: 1.2.3.4:7", "weight: 2", `"`, `'`, `"a`, `b"`, `'a`, `b'`, "|", ">", "service: |",
	"service: >-", "service: |+", "service: |2", `service: "multi`, `line"`, "service: 'it''s", "x'",
	"[", "]", "{", "}", "listeners:", "clusters:", "clusters: []", "listeners: # c", "? k", ": v",
	"health_check:", "mode: watch", "interval: 3s", "- - a", "endpoints: [", "{address: 1.2.3.4:6}]",
	"log:", "level: info", `x: "#"`, "y: a # b", "- {name: q, endpoints: [{address: 1.1.1.1:1}]}",
	"cluster: a", "address: 127.0.0.1:1", "- name: l", "admin:", "address: 127.0.0.1:9",
	"name: \"c", "- name: c", "  # indented comment", "a: b: c", "-name: z", "key:value",
}

// mutateLines returns data with n random line edits: a line of
// lineVocabulary inserted at a random indentation, a line deleted,
// duplicated or re-indented.
func mutateLines(r *rand.Rand, data string, n int) string {
	lines := strings.Split(data, "\n")
	for range n {
		i := r.IntN(len(lines) + 1)
		switch r.IntN(5) {
		case 0, 1:
			line := strings.Repeat(" ", r.IntN(9)) + lineVocabulary[r.IntN(len(lineVocabulary))]
			lines = slices.Insert(lines, i, line)
		case 2:
			if i < len(lines) {
				lines = slices.Delete(lines, i, i+1)
			}
		case 3:
			if i < len(lines) {
				lines = slices.Insert(lines, i, lines[i])
			}
		case 4:
			if i < len(lines) {
				lines[i] = strings.Repeat(" ", r.IntN(9)) + strings.TrimLeft(lines[i], " ")
			}
		}
	}
	return strings.Join(lines, "\n")
}

// TestParserRandomLineEdits checks the Parser against Parse on random line
// edits of the edits above: what a byte-level fuzzer rarely makes, items
// that end, start or continue where splitSections does not expect them.
// Each version is parsed by a Parser warmed with the one before it.
func TestParserRandomLineEdits(t *testing.T) {
	rounds := 4_000
	if testing.Short() {
		rounds = 500
	}
	r := rand.New(rand.NewPCG(1, 2))
	var p Parser
	prev := base
	split := 0
	for i := range rounds {
		from := edits[r.IntN(len(edits))].data
		if r.IntN(2) == 0 {
			from = prev
		}
		data := mutateLines(r, from, 1+r.IntN(3))
		got, err := p.Parse("t.yaml", []byte(data))
		sameResult(t, fmt.Sprintf("round %d", i), []byte(data), got, err)
		if err == nil {
			prev = data
		}
		var q Parser
		if q.parseItems([]byte(data)) != nil {
			split++
		}
	}
	t.Logf("%d of %d versions parsed item by item", split, rounds)
}
