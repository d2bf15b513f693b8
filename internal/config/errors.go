package config

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a configuration file, at a position.
//
// Its text is FILE:LINE:COL: path.to.field: message, or FILE:LINE:COL: message
// when the problem concerns the whole file (a YAML syntax error), or
// FILE: message when there is no position at all (the file cannot be read).
type Error struct {
	File string
	// Line and Col are 1-based; 0 when the problem has no position.
	Line, Col int
	// Path names the offending field, like clusters[0].health_check.interval;
	// empty for file-level problems.
	Path string
	Msg  string
	// Err is the underlying error, if any (for errors.Is, e.g. fs.ErrNotExist).
	Err error
	// Warning marks a problem that does not keep the configuration from
	// being served (Config.Warnings): its text has "warning: " before the
	// message.
	Warning bool
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	if e.Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns the underlying error, if any.
func (e *Error) Unwrap() error { return e.Err }

// Pos returns the position of the error.
func (e *Error) Pos() Pos { return Pos{Line: e.Line, Col: e.Col} }

// ErrorList is every problem found in one configuration file, sorted by
// position. Its text is one error per line.
type ErrorList []*Error

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors of the list, so errors.Is and errors.As look
// into each of them.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sort orders the list by position; errors at the same position keep the
// order in which they were found.
func (l ErrorList) sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
}

// errorsAt collects the errors and warnings of one Parse.
type errorsAt struct {
	file  string
	list  ErrorList
	warns ErrorList
}

// warnAtPos records a warning at a position.
func (c *errorsAt) warnAtPos(pos Pos, path, format string, args ...any) {
	c.warns = append(c.warns, &Error{
		File: c.file, Line: max(pos.Line, 1), Col: max(pos.Col, 1),
		Path: path, Msg: fmt.Sprintf(format, args...), Warning: true,
	})
}

// at records a problem at node n (or 1:1 without a node).
func (c *errorsAt) at(n *yaml.Node, path, format string, args ...any) {
	e := &Error{File: c.file, Line: 1, Col: 1, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil && n.Line > 0 {
		e.Line, e.Col = n.Line, max(n.Column, 1)
	}
	c.list = append(c.list, e)
}

// atPos records a problem at a position.
func (c *errorsAt) atPos(pos Pos, path, format string, args ...any) {
	c.list = append(c.list, &Error{
		File: c.file, Line: max(pos.Line, 1), Col: max(pos.Col, 1),
		Path: path, Msg: fmt.Sprintf(format, args...),
	})
}

// Errorf builds an Error in this configuration's file at pos, for problems
// found after loading (a listener address that cannot be bound, say). A %w
// verb in format makes the error wrap its operand, as with fmt.Errorf.
func (c *Config) Errorf(pos Pos, path, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{File: c.File, Line: pos.Line, Col: pos.Col, Path: path, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// ErrorLines returns the lines that report err: one per error of an
// ErrorList (FILE:LINE:COL: path: message), or err's text.
func ErrorLines(err error) []string {
	var list ErrorList
	if !errors.As(err, &list) {
		return []string{err.Error()}
	}
	lines := make([]string, len(list))
	for i, e := range list {
		lines[i] = e.Error()
	}
	return lines
}
