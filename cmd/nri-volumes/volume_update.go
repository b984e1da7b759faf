package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

type updateOptions struct {
	size string
}

func newVolumeUpdateCommand(g *globalOptions, s streams) *cobra.Command {
	var o updateOptions
	cmd := &cobra.Command{
		Use:   "update --size SIZE NAME",
		Short: "Grow a sized volume",
		Long: `Grow a sized volume to SIZE, in use or not, and print its name. A volume
never shrinks: a smaller SIZE is refused, and so is a volume made without a
size. Sizes are whole numbers with a unit: 512Mi, 10Gi, 1G.`,
		Example:           `  nri-volumes volume update --size 20Gi pg-data`,
		Args:              namesArgs("volume update", true),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeUpdate(g, o, args[0], s)
		},
	}
	cmd.Flags().StringVar(&o.size, "size", "", "the new size (required)")
	return cmd
}

func volumeUpdate(g *globalOptions, o updateOptions, name string, s streams) error {
	if o.size == "" {
		return fmt.Errorf("%w: volume update takes --size SIZE", errUsage)
	}
	size, err := parseVolumeSize(o.size)
	if err != nil {
		return fmt.Errorf("--size: %w", err)
	}
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := g.checkMaxSize(size); err != nil {
		return err
	}
	v, err := store.Grow(g.nsOrDefault(), name, size)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(s.out, v.Name)
	return err
}
