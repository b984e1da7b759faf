package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/volumes"
)

type removeOptions struct {
	force bool
}

func newVolumeRemoveCommand(g *globalOptions, s streams) *cobra.Command {
	var o removeOptions
	cmd := &cobra.Command{
		Use:     "rm [-f] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove volumes",
		Long: `Remove volumes and their data, and their snapshots, printing each name removed
(and, on stderr, how many snapshots went with it). A volume that a
container uses is refused, with a message that names the container; the
others are still removed, and the command exits 1.`,
		Example: `  nri-volumes volume rm redis-data
  nri-volumes -n shop volume rm -f old-cache maybe-gone`,
		Args:              namesArgs("volume rm", false),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeRemove(g, o, args, s)
		},
	}
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "do not report volumes that do not exist")
	return cmd
}

func volumeRemove(g *globalOptions, o removeOptions, names []string, s streams) error {
	store, err := g.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	failed := false
	for _, n := range names {
		// Counted first: a volume's snapshots go with it, and the person
		// is told.
		snaps, _ := store.Snapshots().Count(g.nsOrDefault(), n)
		err := store.Remove(g.nsOrDefault(), n)
		switch {
		case err == nil:
			fmt.Fprintln(s.out, n)
			if snaps > 0 {
				fmt.Fprintf(s.err, "nri-volumes: volume %q: removed its %d snapshot(s) too\n", n, snaps)
			}
		case o.force && errors.Is(err, volumes.ErrNotFound):
		default:
			fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
			failed = true
		}
	}
	reapLeftovers(store, s)
	if failed {
		return errReported
	}
	return nil
}

// reapLeftovers deletes what killed commands left in the trash, so that
// leftovers go without a running plugin; a failure is a warning, not the
// command's: volume check reports what stays.
func reapLeftovers(store *volumes.Store, s streams) {
	if err := store.ReapTrash(); err != nil {
		fmt.Fprintf(s.err, "nri-volumes: warning: %v\n", err)
	}
}
