// Command vigil is a front proxy for gRPC and TCP services that
// health-checks its own backends with the gRPC health protocol, evicts the
// ones that cannot serve, balances over the others, and logs every eviction.
//
//	vigil run --config FILE         run the proxy (default FILE: config.yaml)
//	vigil validate --config FILE    check a config; exit 0, or print errors and exit 1
//	vigil status [--admin ADDR]     print clusters and endpoints with their health
//	vigil version
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage:
  vigil run --config FILE         run the proxy (default FILE: config.yaml)
  vigil validate --config FILE    check a config; exit 0, or print errors and exit 1
  vigil status [--admin ADDR]     print clusters and endpoints with their health
  vigil version
`

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli runs one subcommand and returns the process's exit code.
func cli(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runCmd(rest, stdout, stderr)
	case "validate":
		return validateCmd(rest, stdout, stderr)
	case "status":
		return statusCmd(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "vigil: unknown command %q\n%s", cmd, usage)
		return 2
	}
}
