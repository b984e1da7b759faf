package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/volumes"
)

type updateOptions struct {
	size     string
	labelAdd []string
	labelRm  []string
}

func newVolumeUpdateCommand(g *globalOptions, s streams) *cobra.Command {
	var o updateOptions
	cmd := &cobra.Command{
		Use:   "update [--size SIZE] [--label-add K=V]... [--label-rm K]... NAME",
		Short: "Grow a sized volume, or change a volume's labels",
		Long: `Grow a sized volume to SIZE, in use or not, and print its name. A volume
never shrinks: a smaller SIZE is refused, and so is a volume made without a
size. Sizes are whole numbers with a unit: 512Mi, 10Gi, 1G. --label-add sets
a label (replacing its value), --label-rm removes one; in use or not.`,
		Example: `  nri-volumes volume update --size 20Gi pg-data
  nri-volumes volume update --label-add tier=gold --label-rm tmp pg-data`,
		Args:              namesArgs("volume update", true),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeUpdate(g, o, args[0], s)
		},
	}
	cmd.Flags().StringVar(&o.size, "size", "", "the new size")
	stringArray(cmd.Flags(), &o.labelAdd, "label-add", "", "add or replace the label KEY=VALUE (repeatable)")
	stringArray(cmd.Flags(), &o.labelRm, "label-rm", "", "remove the label KEY (repeatable)")
	return cmd
}

func volumeUpdate(g *globalOptions, o updateOptions, name string, s streams) error {
	if o.size == "" && len(o.labelAdd) == 0 && len(o.labelRm) == 0 {
		return fmt.Errorf("%w: volume update takes --size SIZE, --label-add K=V or --label-rm K", errUsage)
	}
	var size int64
	if o.size != "" {
		var err error
		if size, err = parseVolumeSize(o.size); err != nil {
			return fmt.Errorf("--size: %w", err)
		}
	}
	add, err := parseLabels(o.labelAdd)
	if err != nil {
		return err
	}
	for _, k := range o.labelRm {
		if k == "" {
			return fmt.Errorf("--label-rm %q: %w: want KEY", k, volumes.ErrInvalid)
		}
	}
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	if len(add) > 0 || len(o.labelRm) > 0 {
		if _, err := store.UpdateLabels(g.nsOrDefault(), name, add, o.labelRm); err != nil {
			return err
		}
	}
	if o.size != "" {
		if err := g.checkMaxSize(size); err != nil {
			return err
		}
		if _, err := store.Grow(g.nsOrDefault(), name, size); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(s.out, name)
	return err
}
