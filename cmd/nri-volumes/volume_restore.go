package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newVolumeRestoreCommand(g *globalOptions, s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "restore NAME SNAP",
		Short: "Put a snapshot's data back into its volume",
		Long: `Replace the data of volume NAME with that of its snapshot SNAP, and print the
name. A volume that a container uses is refused, with a message that names
the container, as import is. A volume grown since the snapshot keeps its
size. The snapshot stays.`,
		Example:           `  nri-volumes volume restore pg-data before-migration`,
		Args:              argsBetween(2, 2, "volume restore takes NAME and SNAP"),
		ValidArgsFunction: g.completeSnapshots,
		RunE: func(_ *cobra.Command, args []string) error {
			store, err := g.open(args[0])
			if err != nil {
				return err
			}
			defer store.Close()
			if err := store.Snapshots().Restore(g.nsOrDefault(), args[0], args[1]); err != nil {
				return err
			}
			_, err = fmt.Fprintln(s.out, args[0])
			return err
		},
	}
}
