package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newCompletionCommand(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print the completion script for a shell. It completes commands and flags, and
asks nri-volumes for the names of volumes and namespaces in the store that
--root or --config names.`,
		Example: `  source <(nri-volumes completion bash)
  nri-volumes completion zsh > "${fpath[1]}/_nri-volumes"
  nri-volumes completion fish > ~/.config/fish/completions/nri-volumes.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      argsBetween(1, 1, "completion takes one shell: bash, zsh or fish"),
		RunE: func(c *cobra.Command, args []string) error {
			root := c.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(s.out, true)
			case "zsh":
				return root.GenZshCompletion(s.out)
			case "fish":
				return root.GenFishCompletion(s.out, true)
			}
			return fmt.Errorf("%w: completion: unknown shell %q (bash, zsh or fish)", errUsage, args[0])
		},
	}
}
