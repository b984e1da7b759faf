// Command nri-volumes is an NRI plugin for containerd that gives CRI
// containers Docker-style volumes, and the CLI that manages those volumes.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nri-volumes/nri-volumes/internal/hook"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = "unknown"
)

// streams are the standard streams a command reads and writes, so tests can
// run commands in-process.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// errUsage marks a command line that cannot be parsed; it exits with 2.
var errUsage = errors.New("usage")

// errUsageReported means the command printed what was wrong with the command
// line; it exits with 2.
var errUsageReported = errors.New("usage reported")

// errReported means the command already printed its errors; it exits with 1.
var errReported = errors.New("errors reported")

func main() {
	os.Exit(dispatch(os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}))
}

// dispatch runs the command line args and returns the exit code. The OCI
// hook runs on the path of every container start, so it skips building the
// command tree.
func dispatch(args []string, s streams) int {
	if len(args) > 0 && args[0] == "hook" {
		return exitCode(s, hook.Run(args[1:], s.in))
	}
	root := newRootCommand(s)
	if len(args) == 0 {
		if launchedByRuntime() {
			return exitCode(s, runPlugin(defaultRunOptions()))
		}
		fmt.Fprint(s.err, root.UsageString())
		return 2
	}
	root.SetArgs(args)
	return exitCode(s, root.Execute())
}

func exitCode(s streams, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errReported):
		return 1
	case errors.Is(err, errUsageReported):
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
		return 2
	}
	fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
	return 1
}
