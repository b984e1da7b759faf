package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/volumes"
)

type createOptions struct {
	labels []string
	opts   []string
}

func newVolumeCreateCommand(g *globalOptions, s streams) *cobra.Command {
	var o createOptions
	cmd := &cobra.Command{
		Use:   "create [--label K=V]... [-o|--opt KEY=VALUE]... NAME",
		Short: "Create a named volume",
		Long: `Create a named volume in the namespace, as nerdctl volume create does, and print
its name. Volumes named in a pod's annotations are created on first use too.`,
		Example: `  nri-volumes volume create redis-data
  nri-volumes -n shop volume create --label app=redis redis-data
  nri-volumes volume create -o uid=999 -o gid=999 -o mode=0750 redis-data
  nri-volumes volume create -o size=10Gi pg-data
  nri-volumes volume create -o size=1Gi -o inodes=1000000 maildir`,
		Args: namesArgs("volume create", true),
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeCreate(g, o, args[0], s)
		},
	}
	stringArray(cmd.Flags(), &o.labels, "label", "", "a label KEY=VALUE (repeatable)")
	stringArray(cmd.Flags(), &o.opts, "opt", "o", "a volume option KEY=VALUE: size=10Gi, inodes=N (with a size: about N inodes instead of one per 16KiB), uid=N, gid=N, mode=0770 (repeatable)")
	return cmd
}

func volumeCreate(g *globalOptions, o createOptions, name string, s streams) error {
	labels, err := parseLabels(o.labels)
	if err != nil {
		return err
	}
	opts, err := parseCreateOpts(o.opts)
	if err != nil {
		return err
	}
	opts.Labels = labels
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := g.checkMaxSize(opts.Size); err != nil {
		return err
	}
	v, err := store.Create(g.nsOrDefault(), name, opts)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(s.out, v.Name)
	return err
}

func parseLabels(specs []string) (map[string]string, error) {
	labels := make(map[string]string, len(specs))
	for _, l := range specs {
		k, v, _ := strings.Cut(l, "=")
		if k == "" {
			return nil, fmt.Errorf("--label %q: %w: want KEY=VALUE", l, volumes.ErrInvalid)
		}
		labels[k] = v
	}
	return labels, nil
}
