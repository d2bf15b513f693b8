package config

import (
	"bytes"
	"slices"
	"sync"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Parser parses successive versions of one configuration file, re-parsing
// only the list items that changed since the last version it parsed: a
// reload after editing one cluster of a file of thousands costs about as
// much as parsing that cluster, not the file.
//
// It splits the text into the items of the top-level `listeners:` and
// `clusters:` lists and a skeleton (everything else), and keeps the decoded
// value of each item keyed by the item's exact text. The split is done on
// lines, without YAML, so it is only attempted on text simple enough for
// lines to show the structure (no tabs, anchors, aliases, tags, merge keys,
// directives or document markers; each list written as a block with one
// item indentation); anything else, and any text with an error, gets the
// full Parse, so that errors are always Parse's own. The result is meant to
// be Parse's on every input, positions included: the tests, a random
// line-edit test and a fuzz target compare the two.
//
// A zero Parser is ready to use. It is safe for concurrent use; parses are
// serialized. It keeps the decoded items of the last version it parsed item
// by item and no others, so its memory is in proportion to one
// configuration.
type Parser struct {
	mu        sync.Mutex
	listeners map[string]*listenerEntry
	clusters  map[string]*clusterEntry
	// itemParses counts the items parsed with YAML since the Parser was
	// made (cache misses), for the tests.
	itemParses int
}

// listenerEntry is a decoded listener item. Its positions are those of the
// item when it starts on (0-based) line off of the file: line k of the
// item's own text is line k+off of the file. Entries are never modified:
// Configs returned earlier may share their slices.
type listenerEntry struct {
	key string // the item's text
	off int
	l   Listener
	src listenerSource
}

// clusterEntry is a decoded cluster item, positioned like listenerEntry.
type clusterEntry struct {
	key  string
	off  int
	c    Cluster
	name Pos
}

// Load reads and parses the configuration file at path, as the package's
// Load does, reusing what it decoded of the previous version.
func (p *Parser) Load(path string) (*Config, error) {
	return load(path, p.Parse)
}

// Parse parses a configuration as the package's Parse does, with the same
// result and errors, reusing what it decoded of the previous version. A
// version with an error costs an item-by-item attempt and then Parse; it
// leaves what the Parser keeps as it was.
func (p *Parser) Parse(file string, data []byte) (*Config, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cfg := p.parseItems(data); cfg != nil {
		cfg.File = file
		for _, w := range cfg.Warnings {
			w.File = file
		}
		return cfg, nil
	}
	// Too complex to split, or wrong: the full parse decides, and finds
	// every error with the right paths.
	return Parse(file, data)
}

// Kinds of item lists.
const (
	listenerList = iota
	clusterList
)

// listSection is one `listeners:` or `clusters:` section of the file.
type listSection struct {
	kind int
	// keyLine and skelLine are the 0-based line of the section's key in
	// data and in the skeleton (set by skeleton); keyEnd is the offset in
	// data just past its colon.
	keyLine, skelLine, keyEnd int
	items                     []item
}

// item is one element of a list: its bytes data[start:end] from its "- "
// line to the next item or the end of the section (comments and blank
// lines included), starting on 0-based line line and holding lines
// newlines.
type item struct {
	start, end  int
	line, lines int
}

// parseItems parses data item by item, or returns nil when data is not
// simple enough or has any error (what Parse then reports).
func (p *Parser) parseItems(data []byte) *Config {
	if len(data) > MaxFileSize || !simpleText(data) {
		return nil
	}
	sections, ok := splitSections(data)
	if !ok {
		return nil
	}

	errs := &errorsAt{}
	root := decodeYAML(errs, skeleton(data, sections))
	if root == nil || len(errs.list) > 0 || !sectionsAreKeys(root, sections) {
		return nil
	}
	w := newWalker(errs, root)
	cfg, src := w.decodeTop(root)
	// Listeners or clusters in the skeleton (a list in flow style) would
	// have positions of the skeleton, not of the file: parse whole.
	if len(errs.list) > 0 || w.exhausted || len(cfg.Listeners) > 0 || len(cfg.Clusters) > 0 {
		return nil
	}
	if src.admin != (Pos{}) {
		src.admin.Line = fileLine(sections, src.admin.Line)
	}

	listeners := make(map[string]*listenerEntry, len(p.listeners))
	clusters := make(map[string]*clusterEntry, len(p.clusters))
	for _, s := range sections {
		switch s.kind {
		case listenerList:
			cfg.Listeners = make([]Listener, 0, len(s.items))
			src.listeners = make([]listenerSource, 0, len(s.items))
		case clusterList:
			cfg.Clusters = make([]Cluster, 0, len(s.items))
			src.clusters = make([]Pos, 0, len(s.items))
		}
		for _, it := range s.items {
			text := data[it.start:it.end]
			switch s.kind {
			case listenerList:
				e := listeners[string(text)]
				if e == nil {
					if e = p.listeners[string(text)]; e != nil {
						e = e.at(it.line)
					} else if e = p.parseListener(text, it.line); e == nil {
						return nil
					}
					listeners[e.key] = e
				} else {
					e = e.at(it.line) // the same text twice: an error below
				}
				cfg.Listeners = append(cfg.Listeners, e.l)
				src.listeners = append(src.listeners, e.src)
			case clusterList:
				e := clusters[string(text)]
				if e == nil {
					if e = p.clusters[string(text)]; e != nil {
						e = e.at(it.line)
					} else if e = p.parseCluster(text, it.line); e == nil {
						return nil
					}
					clusters[e.key] = e
				} else {
					e = e.at(it.line)
				}
				cfg.Clusters = append(cfg.Clusters, e.c)
				src.clusters = append(src.clusters, e.name)
			}
		}
	}
	w.crossCheck(cfg, src)
	if len(errs.list) > 0 {
		return nil
	}
	errs.warns.sort()
	cfg.Warnings = errs.warns
	p.listeners, p.clusters = listeners, clusters
	return cfg
}

// parseListener parses and decodes the text of one listener item starting
// on line off, or returns nil if it has any error.
func (p *Parser) parseListener(text []byte, off int) *listenerEntry {
	w, n := p.parseItem(text)
	if n == nil {
		return nil
	}
	l, src := w.decodeListener(n, "listeners[0]")
	if len(w.errs.list) > 0 {
		return nil
	}
	e := &listenerEntry{key: string(text), l: l, src: src}
	e.move(off)
	return e
}

// parseCluster parses and decodes the text of one cluster item starting on
// line off, or returns nil if it has any error.
func (p *Parser) parseCluster(text []byte, off int) *clusterEntry {
	w, n := p.parseItem(text)
	if n == nil {
		return nil
	}
	c, name := w.decodeCluster(n, "clusters[0]")
	if len(w.errs.list) > 0 {
		return nil
	}
	e := &clusterEntry{key: string(text), c: c, name: nodePos(name)}
	e.move(off)
	return e
}

// parseItem parses the text of one item, which must be a block list of
// exactly one element starting on its first line, and returns a walker for
// it and the element, or a nil node.
func (p *Parser) parseItem(text []byte) (*walker, *yaml.Node) {
	p.itemParses++
	errs := &errorsAt{}
	root := decodeYAML(errs, text)
	if root == nil || len(errs.list) > 0 || root.Kind != yaml.SequenceNode ||
		root.Style&yaml.FlowStyle != 0 || root.Line != 1 || len(root.Content) != 1 {
		return nil, nil
	}
	return newWalker(errs, root), root.Content[0]
}

// at returns e with its positions moved to line offset off: e itself when
// they are already there, else a copy (the entry may be in use by a Config
// returned earlier, which is never modified).
func (e *listenerEntry) at(off int) *listenerEntry {
	if off == e.off {
		return e
	}
	m := *e
	m.move(off)
	return &m
}

// move moves e's positions to line offset off, in place: only for an entry
// no Config uses yet.
func (e *listenerEntry) move(off int) {
	d := off - e.off
	e.off = off
	e.l.Pos = e.l.Pos.shift(d)
	e.l.TLS = e.l.TLS.shift(d)
	e.l.Routes = shiftRoutes(e.l.Routes, d)
	e.l.AccessLog.PathPos = e.l.AccessLog.PathPos.shift(d)
	e.src = listenerSource{name: e.src.name.shift(d), address: e.src.address.shift(d), cluster: e.src.cluster.shift(d)}
}

// at returns e with its positions moved to line offset off, as
// listenerEntry.at does.
func (e *clusterEntry) at(off int) *clusterEntry {
	if off == e.off {
		return e
	}
	m := *e
	m.c.Endpoints = slices.Clone(e.c.Endpoints)
	if e.c.Hash != nil {
		h := *e.c.Hash
		m.c.Hash = &h
	}
	m.move(off)
	return &m
}

// move moves e's positions to line offset off, in place: only for an entry
// no Config uses yet, whose Endpoints are its own.
func (e *clusterEntry) move(off int) {
	d := off - e.off
	e.off = off
	e.c.Pos = e.c.Pos.shift(d)
	e.c.TLS = e.c.TLS.shift(d)
	e.name = e.name.shift(d)
	for i := range e.c.Endpoints {
		e.c.Endpoints[i].Pos = e.c.Endpoints[i].Pos.shift(d)
	}
	if e.c.Hash != nil {
		e.c.Hash.Pos = e.c.Hash.Pos.shift(d)
	}
}

// shift moves p by d lines; the zero Pos (no position) stays zero.
func (p Pos) shift(d int) Pos {
	if p == (Pos{}) {
		return p
	}
	p.Line += d
	return p
}

// simpleText reports whether data has none of what could make its lines
// lie about its structure, or make an item mean something else out of its
// context: tabs, carriage returns, anchors, aliases, tags, merge keys,
// invalid UTF-8, byte order marks and the line breaks YAML knows beyond
// '\n' (NEL, LS, PS). Directives and document markers are checked per line.
func simpleText(data []byte) bool {
	for _, c := range []byte{'\t', '\r', '&', '*', '!'} {
		if bytes.IndexByte(data, c) >= 0 {
			return false
		}
	}
	if bytes.Contains(data, []byte("<<")) || !utf8.Valid(data) {
		return false
	}
	for _, s := range []string{"\u0085", "\u2028", "\u2029", "\ufeff"} {
		if bytes.Contains(data, []byte(s)) {
			return false
		}
	}
	return true
}

// splitSections finds the top-level `listeners:` and `clusters:` lists and
// their items by looking at lines: a top-level key is at column 0; a
// section's first line that is neither blank nor a comment fixes the
// indentation of its items, each of which starts with "- " (or "-" alone)
// at that indentation; lines indented more, blank lines and comments belong
// to the item before; the section ends at the next line at column 0. False
// when the text does not fit this picture (or a list is empty), and lines
// cannot be trusted to show the structure.
func splitSections(data []byte) ([]listSection, bool) {
	var sections []listSection
	cur := -1    // index of the section being read, or -1
	indent := -1 // of its items, once known
	line := 0
	for pos := 0; pos < len(data); line++ {
		sp := pos
		for sp < len(data) && data[sp] == ' ' {
			sp++
		}
		lineEnd := len(data)
		if i := bytes.IndexByte(data[sp:], '\n'); i >= 0 {
			lineEnd = sp + i
		}
		next := min(lineEnd+1, len(data))
		switch {
		case sp == lineEnd || data[sp] == '#':
			// Blank or a comment: part of whatever it follows.
		case sp > pos && cur < 0:
			// Inside another top-level key's value: the skeleton's.
		case sp == pos && data[pos] != '-':
			// A top-level key: ends the section being read.
			l := data[pos:lineEnd]
			if l[0] == '%' || l[0] == '.' && bytes.HasPrefix(l, []byte("...")) {
				return nil, false // a directive or a document end
			}
			if cur >= 0 {
				if !closeSection(&sections[cur], pos, line) {
					return nil, false
				}
				cur = -1
			}
			if kind, keyEnd, ok := sectionKey(l); ok {
				sections = append(sections, listSection{kind: kind, keyLine: line, keyEnd: pos + keyEnd})
				cur, indent = len(sections)-1, -1
			}
		case sp == pos && bytes.HasPrefix(data[pos:lineEnd], []byte("---")):
			return nil, false // a document start
		case cur < 0:
			// A list at the top level: the skeleton's (and an error).
		case indent < 0 || sp-pos == indent:
			if data[sp] != '-' || sp+1 < lineEnd && data[sp+1] != ' ' {
				return nil, false // not an item
			}
			indent = sp - pos
			s := &sections[cur]
			closeSection(s, pos, line)
			s.items = append(s.items, item{start: pos, line: line})
		case sp-pos < indent:
			return nil, false
		}
		// Otherwise indented more than the items: inside the current one.
		pos = next
	}
	if cur >= 0 {
		s := &sections[cur]
		if len(s.items) == 0 {
			return nil, false
		}
		it := &s.items[len(s.items)-1]
		it.end, it.lines = len(data), bytes.Count(data[it.start:], []byte("\n"))
	}
	return sections, len(sections) > 0
}

// closeSection ends the last item of s at offset at, the start of line
// line; false if s has no item.
func closeSection(s *listSection, at, line int) bool {
	n := len(s.items)
	if n == 0 {
		return false
	}
	it := &s.items[n-1]
	it.end, it.lines = at, line-it.line
	return true
}

// sectionKey reports whether line is exactly `listeners:` or `clusters:`,
// optionally followed by spaces and a comment, and returns the list's kind
// and the offset just past the colon.
func sectionKey(line []byte) (kind, keyEnd int, ok bool) {
	var rest []byte
	switch {
	case bytes.HasPrefix(line, []byte("listeners:")):
		kind, keyEnd = listenerList, len("listeners:")
	case bytes.HasPrefix(line, []byte("clusters:")):
		kind, keyEnd = clusterList, len("clusters:")
	default:
		return 0, 0, false
	}
	rest = line[keyEnd:]
	sp := 0
	for sp < len(rest) && rest[sp] == ' ' {
		sp++
	}
	if sp < len(rest) && (sp == 0 || rest[sp] != '#') {
		return 0, 0, false
	}
	return kind, keyEnd, true
}

// skeleton returns data without the items' lines and with each section's
// key given the value [] (`clusters: []`): the rest of the file, for the
// walker to decode. Dropping the lines (rather than blanking them) spares
// the YAML scanner one empty line per line of items, and changes no
// meaning: the lines follow a complete `key: []` line at the top level.
// The lines of the skeleton are those of data less the lines removed
// before them (see fileLine); each section's skelLine is set.
func skeleton(data []byte, sections []listSection) []byte {
	n := len(data)
	for _, s := range sections {
		n -= s.items[len(s.items)-1].end - s.items[0].start
	}
	out := make([]byte, 0, n+len(" []")*len(sections))
	pos, removed := 0, 0
	for i := range sections {
		s := &sections[i]
		s.skelLine = s.keyLine - removed
		out = append(out, data[pos:s.keyEnd]...)
		out = append(out, " []"...)
		first, last := s.items[0], s.items[len(s.items)-1]
		out = append(out, data[s.keyEnd:first.start]...)
		pos = last.end
		removed += last.line + last.lines - first.line
	}
	return append(out, data[pos:]...)
}

// fileLine returns the line of data that is line (1-based) of its skeleton.
func fileLine(sections []listSection, line int) int {
	file := line
	for _, s := range sections {
		first, last := s.items[0], s.items[len(s.items)-1]
		// The items were removed right after line first.line of data (0-based),
		// that is after line skelLine+(first.line-keyLine) of the skeleton.
		if line > s.skelLine+first.line-s.keyLine {
			file += last.line + last.lines - first.line
		}
	}
	return file
}

// sectionsAreKeys reports whether each section's key line is a key of the
// skeleton's root block mapping, with the value [] on the same line: the
// YAML parser saw the same structure as splitSections (a quoted string
// spanning lines, say, could have swallowed the key line).
func sectionsAreKeys(root *yaml.Node, sections []listSection) bool {
	if root.Kind != yaml.MappingNode || root.Style&yaml.FlowStyle != 0 {
		return false
	}
	for _, s := range sections {
		name := "listeners"
		if s.kind == clusterList {
			name = "clusters"
		}
		found := false
		for i := 0; i+1 < len(root.Content); i += 2 {
			k, v := root.Content[i], root.Content[i+1]
			if k.Line == s.skelLine+1 && k.Column == 1 && k.Kind == yaml.ScalarNode && k.Style == 0 && k.Value == name &&
				v.Kind == yaml.SequenceNode && v.Style&yaml.FlowStyle != 0 && v.Line == s.skelLine+1 && len(v.Content) == 0 {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
