// Command nri-volumes is an NRI plugin for containerd that gives CRI
// containers Docker-style volumes, and the CLI that manages those volumes.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
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

// errReported means the command already printed its errors; it exits with 1.
var errReported = errors.New("errors reported")

const usage = `Usage: nri-volumes COMMAND [ARGS]

Commands:
  run       run the NRI plugin (the default when containerd launches it)
  hook      OCI hooks the plugin installs into containers
  volume    manage volumes: create, ls, inspect, rm, prune, check
  version   show version information

Run 'nri-volumes volume --help' for the volume commands.
`

func main() {
	os.Exit(dispatch(os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr}))
}

// dispatch runs the subcommand named by args[0] and returns the exit code.
func dispatch(args []string, s streams) int {
	if len(args) == 0 {
		if launchedByRuntime() {
			return exitCode(s, runCommand(nil))
		}
		fmt.Fprint(s.err, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCommand(args[1:])
	case "hook":
		err = hookCommand(args[1:])
	case "volume", "volumes":
		err = volumeCommand(args[1:], s)
	case "version":
		err = versionCommand(args[1:], s.out)
	case "help", "-h", "--help":
		fmt.Fprint(s.out, usage)
	default:
		fmt.Fprintf(s.err, "nri-volumes: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	return exitCode(s, err)
}

func exitCode(s streams, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errReported):
		return 1
	case errors.Is(err, errUsage):
		fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
		return 2
	}
	fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
	return 1
}

func versionCommand(args []string, out io.Writer) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: version takes no arguments", errUsage)
	}
	nri := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/containerd/nri" {
				nri = dep.Version
				if dep.Replace != nil {
					nri = dep.Replace.Path + "@" + dep.Replace.Version
				}
			}
		}
	}
	_, err := fmt.Fprintf(out, "nri-volumes:\n Version:    %s\n Commit:     %s\n Go version: %s\n NRI:        %s\n",
		version, commit, runtime.Version(), nri)
	return err
}
