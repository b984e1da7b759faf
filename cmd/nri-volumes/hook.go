package main

import (
	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/internal/hook"
)

// newHookCommand shows the hooks in the help. main runs them without the
// command tree (see dispatch), so they parse their own flags.
func newHookCommand(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "hook " + hook.Usage,
		Short: "OCI hooks the plugin installs into containers",
		Long: `OCI hooks that the plugin adds to containers; the runtime runs them with the
container's state on stdin. copyup copies the image's content at each target
into its volume while the volume is still empty (Docker's copy-up).
nri-volumes-hook, installed beside this binary, runs the same hooks and
starts faster; the plugin's hookPath names it by default.`,
		Example:            `  (the plugin adds it; run by the runtime as a createRuntime hook)`,
		DisableFlagParsing: true,
		RunE:               func(_ *cobra.Command, args []string) error { return hook.Run(args, s.in) },
	}
}
