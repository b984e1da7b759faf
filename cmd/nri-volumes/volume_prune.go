package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/internal/bytesize"
	"github.com/nri-volumes/nri-volumes/volumes"
)

type pruneOptions struct {
	all     bool
	force   bool
	filters []string
}

func newVolumePruneCommand(g *globalOptions, s streams) *cobra.Command {
	var o pruneOptions
	cmd := &cobra.Command{
		Use:   "prune [-a] [-f] [--filter K=V]...",
		Short: "Remove unused anonymous volumes (-a: unused named ones too)",
		Long: `Remove the volumes of the namespace that no container uses: anonymous ones, and
named ones too with -a. It asks first unless -f is given, then prints what it
removed and the space reclaimed.

` + filtersHelp,
		Example: `  nri-volumes volume prune
  nri-volumes -n k8s.io volume prune -a -f --filter label=tmp`,
		Args: noArgs("volume prune"),
		RunE: func(*cobra.Command, []string) error { return volumePrune(g, o, s) },
	}
	f := cmd.Flags()
	f.BoolVarP(&o.all, "all", "a", false, "remove unused named volumes too")
	f.BoolVarP(&o.force, "force", "f", false, "do not ask for confirmation")
	stringArray(f, &o.filters, "filter", "", "filter K=V (repeatable)")
	return cmd
}

func volumePrune(g *globalOptions, o pruneOptions, s streams) error {
	filter, err := volumes.ParseFilters(o.filters)
	if err != nil {
		return err
	}
	ns := g.nsOrDefault()
	if err := volumes.ValidateNamespace(ns); err != nil {
		return err
	}
	if !o.force {
		what := "anonymous volumes"
		if o.all {
			what = "volumes"
		}
		fmt.Fprintf(s.err, "WARNING! This will remove all %s in namespace %q not used by at least one container.\n"+
			"Are you sure you want to continue? [y/N] ", what, ns)
		if !confirmed(s.in) {
			return nil
		}
	}
	store, err := g.open()
	if err != nil {
		return err
	}
	defer store.Close()
	removed, reclaimed, err := store.Prune(volumes.PruneOptions{Namespace: ns, All: o.all, Filter: filter})
	reapLeftovers(store, s)
	if len(removed) > 0 {
		fmt.Fprintln(s.out, "Deleted Volumes:")
		for _, v := range removed {
			fmt.Fprintln(s.out, v.Name)
		}
		fmt.Fprintln(s.out)
	}
	fmt.Fprintf(s.out, "Total reclaimed space: %s\n", bytesize.FormatFixed(reclaimed))
	return err
}
