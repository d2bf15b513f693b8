package config

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// walker turns a yaml.Node tree into typed values, recording every problem
// at the position of the offending key or value instead of stopping at the
// first.
//
// Aliases and merge keys (<<) are followed, but every node the walker visits
// is charged to a budget of twice the document's own node count (at least
// 10,000 beyond it), so aliases can at most double the work: a
// "billion laughs" document gets one error instead of an exponential
// expansion.
type walker struct {
	errs      *errorsAt
	limit     int // node visits allowed
	budget    int // node visits left
	exhausted bool
}

// aliasAllowance is the minimum number of extra node visits aliases may
// cause beyond the document's own nodes.
const aliasAllowance = 10_000

// maxMergeDepth bounds merges of merges (<<: *a where a itself merges ...).
const maxMergeDepth = 16

func newWalker(errs *errorsAt, doc *yaml.Node) *walker {
	n := countNodes(doc)
	limit := n + max(n, aliasAllowance)
	return &walker{errs: errs, limit: limit, budget: limit}
}

// countNodes counts the nodes of the tree without following aliases.
func countNodes(root *yaml.Node) int {
	count := 0
	stack := []*yaml.Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n == nil {
			continue
		}
		count++
		stack = append(stack, n.Content...)
	}
	return count
}

// charge takes k visits from the budget; false once it is exhausted (the
// walk then stops descending).
func (w *walker) charge(at *yaml.Node, k int) bool {
	if w.exhausted {
		return false
	}
	w.budget -= k
	if w.budget < 0 {
		w.exhausted = true
		w.errs.at(at, "", "aliases expand the document beyond %d nodes (twice its own size, or 10000 more); vigil expands no further", w.limit)
		return false
	}
	return true
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "must be X, not Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!null":
			return "empty"
		case "!!str":
			return "the string " + quote(n.Value)
		case "!!int", "!!float":
			return "the number " + clean(n.Value)
		case "!!bool":
			return "the boolean " + clean(n.Value)
		case "!!timestamp":
			return "the date " + quote(n.Value)
		default:
			return "a value tagged " + quote(tag)
		}
	}
	return "an unknown kind of YAML value"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

// entry is one key: value of a mapping.
type entry struct {
	name       string
	key, value *yaml.Node
}

// fields are the entries of a mapping after merges, in order. Mappings of
// the schema have a handful of keys, scanned linearly; a mapping with many
// (unknown) keys gets an index so that it is not quadratic.
type fields struct {
	entries []entry
	index   map[string]int // name -> position in entries, once large
}

// indexAbove is the entry count past which fields keeps an index.
const indexAbove = 16

// add appends an entry whose name is not in f yet.
func (f *fields) add(e entry) {
	f.entries = append(f.entries, e)
	switch {
	case f.index != nil:
		f.index[e.name] = len(f.entries) - 1
	case len(f.entries) > indexAbove:
		f.index = make(map[string]int, 2*len(f.entries))
		for i, e := range f.entries {
			f.index[e.name] = i
		}
	}
}

// find returns the entry for key among entries[from:], or nil.
func (f *fields) find(key string, from int) *entry {
	if f.index != nil {
		if i, ok := f.index[key]; ok && i >= from {
			return &f.entries[i]
		}
		return nil
	}
	for i := from; i < len(f.entries); i++ {
		if f.entries[i].name == key {
			return &f.entries[i]
		}
	}
	return nil
}

func (f *fields) has(key string) bool {
	return f.find(key, 0) != nil
}

// value returns the value of key, or nil when the key is absent.
func (f *fields) value(key string) *yaml.Node {
	if e := f.find(key, 0); e != nil {
		return e.value
	}
	return nil
}

// mapping reads raw as a mapping whose keys must be among known. An empty
// (null) value is an empty mapping, so `health_check:` alone means all
// defaults. It returns the resolved node and false when raw is no mapping
// (reported) or the budget ran out.
func (w *walker) mapping(raw *yaml.Node, path string, known []string) (fields, *yaml.Node, bool) {
	var f fields
	n := resolve(raw)
	if n == nil {
		return f, nil, false
	}
	if isNull(n) {
		return f, n, true
	}
	if n.Kind != yaml.MappingNode {
		w.errs.at(n, path, "must be a mapping, not %s", describe(n))
		return f, n, false
	}
	if !w.collect(raw, n, path, &f, nil) {
		return f, n, false
	}
	for _, e := range f.entries {
		if !slices.Contains(known, e.name) {
			w.errs.at(e.key, join(path, pathKey(e.name)), "unknown field %s%s", quote(e.name), didYouMean(e.name, known))
		}
	}
	return f, n, true
}

// collect adds the entries of mapping n to f: its own keys (duplicates are
// errors), then the keys of the mappings it merges with <<, which do not
// override keys already set (YAML merge semantics: the mapping's own keys
// win, then the first merged mapping that has the key).
func (w *walker) collect(at, n *yaml.Node, path string, f *fields, merging []*yaml.Node) bool {
	if !w.charge(at, len(n.Content)) {
		return false
	}
	var merges []*yaml.Node
	own := len(f.entries) // this mapping's own entries start here
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k == nil {
			continue
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			w.errs.at(k, path, "a key must be a field name, not %s", describe(k))
			continue
		}
		if first := f.find(k.Value, own); first != nil {
			w.errs.at(k, join(path, pathKey(k.Value)), "duplicate field %s (first at line %d)", quote(k.Value), first.key.Line)
			continue
		}
		if !f.has(k.Value) {
			f.add(entry{name: k.Value, key: k, value: v})
		}
	}
	for _, raw := range merges {
		m := resolve(raw)
		if m == nil {
			continue
		}
		var sources []*yaml.Node
		switch m.Kind {
		case yaml.MappingNode:
			sources = []*yaml.Node{m}
		case yaml.SequenceNode:
			if !w.charge(raw, len(m.Content)) {
				return false
			}
			for _, item := range m.Content {
				sources = append(sources, resolve(item))
			}
		}
		if len(sources) == 0 {
			w.errs.at(raw, path, "a merge (<<) needs a mapping or a list of mappings, not %s", describe(m))
			continue
		}
		for _, src := range sources {
			switch {
			case src == nil:
			case src.Kind != yaml.MappingNode:
				w.errs.at(src, path, "a merge (<<) needs a mapping or a list of mappings, not %s", describe(src))
			case src == n || slices.Contains(merging, src):
				w.errs.at(raw, path, "a merge (<<) refers to a mapping that contains it")
			case len(merging) >= maxMergeDepth:
				w.errs.at(raw, path, "merges (<<) nested more than %d deep", maxMergeDepth)
			default:
				if !w.collect(raw, src, path, f, append(merging, n)) {
					return false
				}
			}
		}
	}
	return true
}

// sequence reads raw as a list; an empty (null) value is an empty list.
func (w *walker) sequence(raw *yaml.Node, path string) ([]*yaml.Node, *yaml.Node, bool) {
	n := resolve(raw)
	if n == nil {
		return nil, nil, false
	}
	if isNull(n) {
		return nil, n, true
	}
	if n.Kind != yaml.SequenceNode {
		w.errs.at(n, path, "must be a list, not %s", describe(n))
		return nil, n, false
	}
	if !w.charge(raw, len(n.Content)) {
		return nil, n, false
	}
	return n.Content, n, true
}

// scalar resolves raw and checks that it is a scalar with a value; what
// describes the expected value for messages ("a string", "a duration like 5s").
func (w *walker) scalar(raw *yaml.Node, path, what string) (*yaml.Node, bool) {
	n := resolve(raw)
	if n == nil {
		return nil, false
	}
	if isNull(n) {
		w.errs.at(n, path, "missing value: must be %s", what)
		return n, false
	}
	if n.Kind != yaml.ScalarNode {
		w.errs.at(n, path, "must be %s, not %s", what, describe(n))
		return n, false
	}
	return n, true
}

// str reads a string. Numbers and booleans are refused rather than
// converted: `name: 1e3` should not silently become "1e3" or 1000.
func (w *walker) str(raw *yaml.Node, path string) (string, *yaml.Node, bool) {
	n, ok := w.scalar(raw, path, "a string")
	if !ok {
		return "", n, false
	}
	if n.ShortTag() != "!!str" {
		w.errs.at(n, path, "must be a string, not %s (quote it to use it as text)", describe(n))
		return "", n, false
	}
	return n.Value, n, true
}

// boolean reads true or false.
func (w *walker) boolean(raw *yaml.Node, path string) (bool, bool) {
	n, ok := w.scalar(raw, path, "true or false")
	if !ok {
		return false, false
	}
	if n.ShortTag() != "!!bool" {
		w.errs.at(n, path, "must be true or false, not %s", describe(n))
		return false, false
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE", true
}

// enum reads one of the allowed strings.
func (w *walker) enum(raw *yaml.Node, path string, allowed []string) (string, bool) {
	what := "one of " + strings.Join(allowed, ", ")
	n, ok := w.scalar(raw, path, what)
	if !ok {
		return "", false
	}
	if n.ShortTag() != "!!str" || !slices.Contains(allowed, n.Value) {
		w.errs.at(n, path, "must be %s, not %s%s", what, describe(n), didYouMean(n.Value, allowed))
		return "", false
	}
	return n.Value, true
}

// integer reads a whole number in [lo, hi].
func (w *walker) integer(raw *yaml.Node, path string, lo, hi int64) (int64, bool) {
	n, ok := w.scalar(raw, path, "an integer")
	if !ok {
		return 0, false
	}
	var v int64
	if n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		if n.ShortTag() == "!!int" || n.ShortTag() == "!!float" && allDigits(strings.TrimPrefix(n.Value, "-")) {
			w.errs.at(n, path, "must be an integer from %d to %d, not %s", lo, hi, clean(n.Value))
		} else {
			w.errs.at(n, path, "must be an integer, not %s", describe(n))
		}
		return 0, false
	}
	return w.inRange(n, path, v, lo, hi)
}

// number reads a finite decimal number (an integer or a float, not .inf
// or .nan); its range is the caller's to judge.
func (w *walker) number(raw *yaml.Node, path string) (float64, bool) {
	n, ok := w.scalar(raw, path, "a number")
	if !ok {
		return 0, false
	}
	var v float64
	if (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&v) != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		w.errs.at(n, path, "must be a number, not %s", describe(n))
		return 0, false
	}
	return v, true
}

func (w *walker) inRange(n *yaml.Node, path string, v, lo, hi int64) (int64, bool) {
	if v < lo || v > hi {
		if hi == math.MaxInt32 {
			w.errs.at(n, path, "must be at least %d, not %d", lo, v)
		} else {
			w.errs.at(n, path, "must be from %d to %d, not %d", lo, hi, v)
		}
		return 0, false
	}
	return v, true
}

// duration reads a Go duration (250ms, 5s, 1m30s). It must be positive, or
// non-negative when zeroOK.
func (w *walker) duration(raw *yaml.Node, path string, zeroOK bool) (time.Duration, bool) {
	n, ok := w.scalar(raw, path, "a duration like 5s or 250ms")
	if !ok {
		return 0, false
	}
	tag := n.ShortTag()
	if tag != "!!str" && tag != "!!int" && tag != "!!float" {
		w.errs.at(n, path, "must be a duration like 5s or 250ms, not %s", describe(n))
		return 0, false
	}
	d, err := time.ParseDuration(n.Value)
	switch {
	case err != nil && (tag != "!!str" || isDecimal(strings.TrimPrefix(n.Value, "-"))):
		w.errs.at(n, path, "invalid duration %s: a duration needs a unit, like 5s or 250ms", quote(n.Value))
		return 0, false
	case err != nil:
		w.errs.at(n, path, "invalid duration %s: use a Go duration like 5s, 250ms or 1m30s", quote(n.Value))
		return 0, false
	case d < 0:
		w.errs.at(n, path, "must not be negative, not %s", clean(n.Value))
		return 0, false
	case d == 0 && !zeroOK:
		w.errs.at(n, path, "must be positive, not %s", clean(n.Value))
		return 0, false
	}
	return d, true
}

// address reads a host:port address under rule.
func (w *walker) address(raw *yaml.Node, path string, rule addressRule) (string, *yaml.Node, bool) {
	s, n, ok := w.str(raw, path)
	if !ok {
		return "", n, false
	}
	if err := checkAddress(s, rule); err != nil {
		w.errs.at(n, path, "%v", err)
		return "", n, false
	}
	return s, n, true
}

// name reads a listener or cluster name.
func (w *walker) name(raw *yaml.Node, path string) (string, *yaml.Node, bool) {
	s, n, ok := w.str(raw, path)
	if !ok {
		return "", n, false
	}
	if err := checkName(s); err != nil {
		w.errs.at(n, path, "%v", err)
		return "", n, false
	}
	return s, n, true
}

// jitter reads a percentage N% as a fraction.
func (w *walker) jitter(raw *yaml.Node, path string) (float64, bool) {
	n, ok := w.scalar(raw, path, "a percentage like 10%")
	if !ok {
		return 0, false
	}
	if n.ShortTag() != "!!str" {
		w.errs.at(n, path, "must be a percentage like 10%%, not %s", describe(n))
		return 0, false
	}
	j, err := parseJitter(n.Value)
	if err != nil {
		w.errs.at(n, path, "%v", err)
		return 0, false
	}
	return j, true
}

// size reads a byte size in [MinMessageSize, MaxMessageSize]: an integer
// or a string like 4MiB.
func (w *walker) size(raw *yaml.Node, path string) (int64, bool) {
	n, ok := w.scalar(raw, path, "a size like 4MiB or a number of bytes")
	if !ok {
		return 0, false
	}
	var v int64
	switch n.ShortTag() {
	case "!!int":
		if n.Decode(&v) != nil {
			w.errs.at(n, path, "must be at most %s, not %s", formatSize(MaxMessageSize), clean(n.Value))
			return 0, false
		}
	case "!!str":
		var err error
		if v, err = parseSize(n.Value); err != nil {
			w.errs.at(n, path, "%v", err)
			return 0, false
		}
	default:
		w.errs.at(n, path, "must be a size like 4MiB or a number of bytes, not %s", describe(n))
		return 0, false
	}
	if v < MinMessageSize || v > MaxMessageSize {
		w.errs.at(n, path, "must be from %s to %s, not %s", formatSize(MinMessageSize), formatSize(MaxMessageSize), clean(n.Value))
		return 0, false
	}
	return v, true
}

// require reports a missing required field at the mapping that lacks it.
func (w *walker) require(f *fields, m *yaml.Node, path, key, hint string) bool {
	if f.has(key) {
		return true
	}
	w.errs.at(m, join(path, key), "missing required field%s", hint)
	return false
}
