package fielderr

import (
	"errors"
	"io/fs"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestList(t *testing.T) {
	var l List
	if err := l.Join(); err != nil {
		t.Fatalf("empty List.Join() = %v, want nil", err)
	}
	l.Add("window", "must be positive, not %v", -1)
	l.Add("file", "unreadable: %w", fs.ErrNotExist)
	err := l.Join()
	if got, want := err.Error(), "window: must be positive, not -1\nfile: unreadable: file does not exist"; got != want {
		t.Errorf("Join() = %q, want %q", got, want)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.Field != "window" {
		t.Errorf("errors.As(Join()) = %v, want the window field's Error", fe)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(Join(), fs.ErrNotExist) = false, want the wrapped cause kept")
	}
}
