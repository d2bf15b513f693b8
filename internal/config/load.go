package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Load reads and parses the configuration file at path. On failure the
// error is an ErrorList (use errors.As) naming every problem found.
func Load(path string) (*Config, error) {
	return load(path, Parse)
}

// load reads the file at path and hands it to parse; Load and Parser.Load
// differ only in the parse.
func load(path string, parse func(file string, data []byte) (*Config, error)) (*Config, error) {
	data, err := readFile(path)
	if err != nil {
		msg := err.Error()
		var pathErr *fs.PathError
		if errors.As(err, &pathErr) {
			msg = pathErr.Err.Error() // the path is already the error's prefix
		}
		return nil, ErrorList{{File: path, Msg: "cannot read: " + msg, Err: err}}
	}
	return parse(path, data)
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file larger than %s", formatSize(MaxFileSize))
	}
	return data, nil
}

// Parse parses a configuration read from file (the name is used in error
// messages and Config.File), fills in defaults and validates it. On failure
// the error is an ErrorList (use errors.As) holding every problem found,
// sorted by position, each with a positive line and column. A YAML syntax
// error stops parsing; otherwise every check runs.
func Parse(file string, data []byte) (*Config, error) {
	errs := &errorsAt{file: file}
	cfg := parse(errs, data)
	if len(errs.list) > 0 {
		errs.list.sort()
		return nil, errs.list
	}
	cfg.File = file
	errs.warns.sort()
	cfg.Warnings = errs.warns
	return cfg, nil
}

func parse(errs *errorsAt, data []byte) *Config {
	if len(data) > MaxFileSize {
		errs.atPos(Pos{}, "", "file larger than %s", formatSize(MaxFileSize))
		return nil
	}
	root := decodeYAML(errs, data)
	if root == nil {
		return nil
	}
	return newWalker(errs, root).decodeConfig(root)
}

// decodeYAML parses data into a node tree and returns the root of its single
// document, or nil after reporting why there is none.
func decodeYAML(errs *errorsAt, data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := safeDecode(dec, &doc); {
	case errors.Is(err, io.EOF):
		errs.atPos(Pos{}, "", "the file holds no configuration (it is empty or only comments)")
		return nil
	case err != nil:
		syntaxError(errs, data, err)
		return nil
	}
	var root *yaml.Node
	if len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	if root == nil || isNull(root) {
		errs.atPos(Pos{Line: doc.Line, Col: doc.Column}, "", "the file holds no configuration (the document is empty)")
		return nil
	}
	var next yaml.Node
	switch err := safeDecode(dec, &next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		syntaxError(errs, data, err)
	default:
		errs.atPos(Pos{Line: next.Line, Col: next.Column}, "", "a second YAML document: a configuration file holds exactly one")
	}
	return root
}

// safeDecode is dec.Decode, turning a panic inside the YAML library (it has
// internal-error panics for inputs it does not expect) into an error, so
// that a malformed file can never crash the proxy during a reload.
func safeDecode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: cannot parse this document (%v)", r)
		}
	}()
	return dec.Decode(n)
}

// yamlParserProblems are the messages of yaml.v3's parser (as opposed to its
// scanner) errors, which it reports with a 0-based line number.
var yamlParserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected '-' indicator":    true,
	"did not find expected key":              true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found duplicate %TAG directive":         true,
	"found undefined tag handle":             true,
}

var (
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	yamlAnchorRE = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)
)

// syntaxError reports a yaml.v3 parse error. The library gives a line (not
// a column) in its message, or nothing; for parser errors the line is where
// the construct that could not be completed starts (a list, a mapping). An
// unknown anchor's alias is looked up in the text to place it.
func syntaxError(errs *errorsAt, data []byte, err error) {
	msg := err.Error()
	pos := Pos{Line: 1, Col: 1}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		msg = m[2]
		if line, convErr := strconv.Atoi(m[1]); convErr == nil && line > 0 {
			pos.Line = line
			if yamlParserProblems[msg] {
				pos.Line++
			}
		}
	} else if m := yamlAnchorRE.FindStringSubmatch(msg); m != nil {
		pos = findText(data, "*"+m[1])
		msg = fmt.Sprintf("alias *%s refers to no anchor (&%s) defined before it", clean(m[1]), clean(m[1]))
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	if msg == "found character that cannot start any token" && startsWithTab(data, pos.Line) {
		msg += " (a tab: YAML indents with spaces)"
	}
	errs.atPos(pos, "", "invalid YAML: %s", msg)
}

// findText returns the position of the first occurrence of s in data, or 1:1.
func findText(data []byte, s string) Pos {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return Pos{Line: 1, Col: 1}
	}
	line := 1 + bytes.Count(data[:i], []byte("\n"))
	col := 1 + utf8.RuneCount(data[bytes.LastIndexByte(data[:i], '\n')+1:i])
	return Pos{Line: line, Col: col}
}

// startsWithTab reports whether the 1-based line of data is indented with a
// tab.
func startsWithTab(data []byte, line int) bool {
	for i := 1; i < line; i++ {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			return false
		}
		data = data[nl+1:]
	}
	indent := bytes.TrimLeft(data, " ")
	return len(indent) > 0 && indent[0] == '\t'
}
