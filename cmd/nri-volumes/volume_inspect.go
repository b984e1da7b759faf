package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/volumes"
)

type inspectOptions struct {
	size   bool
	format string
}

func newVolumeInspectCommand(g *globalOptions, s streams) *cobra.Command {
	var o inspectOptions
	cmd := &cobra.Command{
		Use:   "inspect [-s] [--format TEMPLATE] NAME...",
		Short: "Show volumes in detail",
		Long: `Print a JSON array with one object per volume: Name, Namespace, Mountpoint (the
_data directory), CreatedAt, Labels, Anonymous, UsedBy (container IDs), and
Size with -s. --format runs a Go template for each volume instead, as docker
volume inspect --format does. A name that is not found is reported on stderr
and the command exits 1 after printing the others.`,
		Example: `  nri-volumes volume inspect redis-data
  nri-volumes volume inspect --format '{{.Mountpoint}}' redis-data
  nri-volumes volume inspect -s --format '{{.Name}} {{.Size}} {{json .UsedBy}}' a b`,
		Args:              namesArgs("volume inspect", false),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeInspect(g, o, args, s)
		},
	}
	cmd.Flags().BoolVarP(&o.size, "size", "s", false, "add the disk usage of each volume (walks its data)")
	cmd.Flags().StringVarP(&o.format, "format", "f", "", "a Go template run for each volume (json: the JSON array)")
	return cmd
}

func volumeInspect(g *globalOptions, o inspectOptions, names []string, s streams) error {
	print := func(found []*volumes.Volume) error {
		b, err := json.MarshalIndent(found, "", "    ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(s.out, string(b))
		return err
	}
	if o.format != "" && o.format != "json" {
		tmpl, err := parseTemplate(o.format)
		if err != nil {
			return err
		}
		print = func(found []*volumes.Volume) error { return printTemplate(s.out, tmpl, found) }
	}
	store, err := g.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	found := []*volumes.Volume{}
	failed := false
	for _, n := range names {
		v, err := store.Get(g.nsOrDefault(), n)
		if err == nil && o.size {
			var size int64
			if size, err = store.Size(v); err == nil {
				v.Size = &size
			}
		}
		if err != nil {
			fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
			failed = true
			continue
		}
		found = append(found, v)
	}
	if err := print(found); err != nil {
		return err
	}
	if failed {
		return errReported
	}
	return nil
}
