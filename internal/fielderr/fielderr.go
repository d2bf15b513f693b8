// Package fielderr is the one type for what is wrong with one field of a
// configuration section. The packages that own a section's meaning
// (checker for health_check, balancer/outlier, balancer/slowstart)
// validate it themselves and report in this type, so internal/config
// places every problem at its field's line the same way.
package fielderr

import (
	"errors"
	"fmt"
)

// Error is what is wrong with one field; Field is its name in vigil's
// configuration file (timeout, window, max_ejection_percent, ...).
type Error struct {
	Field string
	Err   error
}

func (e *Error) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// List collects a section's problems in the order they were found.
type List []*Error

// Add records that field is wrong, the reason formatted as by fmt.Errorf.
func (l *List) Add(field, format string, args ...any) {
	*l = append(*l, &Error{Field: field, Err: fmt.Errorf(format, args...)})
}

// Join returns the problems as one error (errors.Join), or nil.
func (l List) Join() error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errors.Join(errs...)
}
