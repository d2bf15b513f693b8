package main

import (
	"fmt"
	"io"
)

func statusCmd(_ []string, _, stderr io.Writer) int {
	fmt.Fprintln(stderr, "vigil status: not available yet")
	return 1
}
