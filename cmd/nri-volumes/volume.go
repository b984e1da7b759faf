package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

const filtersHelp = `Filters: name=NAME|GLOB, label=KEY, label=KEY=VALUE, dangling=true|false,
anonymous=true|false. Several values of one key match if any does (label:
if all do); different keys must all match.`

// groupRunE is the RunE of a command group (name, as errors call it): a
// parent command without RunE would print its help and succeed on a
// mistyped subcommand; this one prints the usage, says what is wrong and
// exits 2.
func groupRunE(name string, s streams) func(*cobra.Command, []string) error {
	return func(c *cobra.Command, args []string) error {
		fmt.Fprint(s.err, c.UsageString())
		if len(args) == 0 {
			return fmt.Errorf("%w: %s needs a command", errUsage, name)
		}
		return fmt.Errorf("%w: unknown %s command %q", errUsage, name, args[0])
	}
}

func newVolumeCommand(g *globalOptions, s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "volume COMMAND",
		Aliases: []string{"volumes"},
		Short:   "Manage volumes: create, update, ls, inspect, rm, prune, check, export, import, push, pull, snapshot, clone, restore, rename",
		Long: `Manage the volumes of the store, as nerdctl volume does. The CLI and a running
plugin may act on the same store at the same time.`,
		Example: `  nri-volumes volume ls
  nri-volumes -n k8s.io volume ls -A
  nri-volumes volume --root /var/lib/nri-volumes rm redis-data`,
		RunE: groupRunE("volume", s),
	}
	cmd.AddCommand(
		newVolumeCreateCommand(g, s),
		newVolumeUpdateCommand(g, s),
		newVolumeListCommand(g, s),
		newVolumeInspectCommand(g, s),
		newVolumeRemoveCommand(g, s),
		newVolumePruneCommand(g, s),
		newVolumeCheckCommand(g, s),
		newVolumeExportCommand(g, s),
		newVolumeImportCommand(g, s),
		newVolumePushCommand(g, s),
		newVolumePullCommand(g, s),
		newVolumeSnapshotCommand(g, s),
		newVolumeCloneCommand(g, s),
		newVolumeRestoreCommand(g, s),
		newVolumeRenameCommand(g, s),
	)
	return cmd
}

func confirmed(in io.Reader) bool {
	if in == nil {
		return false
	}
	line, _ := bufio.NewReader(in).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}
