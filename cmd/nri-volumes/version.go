package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCommand(s streams) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Show version information",
		Long:    "Show the version and commit of nri-volumes, and the Go and NRI versions it was built with.",
		Example: "  nri-volumes version",
		Args:    noArgs("version"),
		RunE:    func(*cobra.Command, []string) error { return printVersion(s.out) },
	}
}

func printVersion(out io.Writer) error {
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
