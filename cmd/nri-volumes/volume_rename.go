package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newVolumeRenameCommand(g *globalOptions, s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "rename OLD NEW",
		Short: "Rename a volume",
		Long: `Give volume OLD the name NEW, with its data, labels and snapshots, and print
the new name. A volume that a container uses is refused, with a message that
names the container, and so is an anonymous volume. Pods that name OLD in
their annotations get a new, empty OLD on their next start.`,
		Example:           `  nri-volumes volume rename pg-data pg-data-old`,
		Args:              argsBetween(2, 2, "volume rename takes OLD and NEW"),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			store, err := g.open(args[0], args[1])
			if err != nil {
				return err
			}
			defer store.Close()
			v, err := store.Rename(g.nsOrDefault(), args[0], args[1])
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(s.out, v.Name)
			return err
		},
	}
}
