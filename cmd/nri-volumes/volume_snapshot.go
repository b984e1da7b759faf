package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/internal/bytesize"
	"github.com/nri-volumes/nri-volumes/volumes"
)

func newVolumeSnapshotCommand(g *globalOptions, s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot COMMAND",
		Short: "Manage point-in-time snapshots of volumes: create, ls, rm",
		Long: `A snapshot is a point-in-time copy of a volume's data, kept with the volume
until "volume snapshot rm" or "volume rm". Of a sized volume (the image
backend) it is crash-consistent while containers write: the volume's file
system is frozen for the moment its image file is cloned, a reflink in O(1)
on xfs (reflink=1) or btrfs, a sparse copy elsewhere. A plain directory volume
cannot be frozen: its snapshot is refused while a container uses it, unless
--live, which copies it as it changes (not crash-consistent).`,
		Example: `  nri-volumes volume snapshot create pg-data before-migration
  nri-volumes volume snapshot ls pg-data
  nri-volumes volume snapshot rm pg-data before-migration`,
		RunE: groupRunE("volume snapshot", s),
	}
	cmd.AddCommand(
		newSnapshotCreateCommand(g, s),
		newSnapshotListCommand(g, s),
		newSnapshotRemoveCommand(g, s),
	)
	return cmd
}

type snapshotCreateOptions struct {
	live bool
}

func newSnapshotCreateCommand(g *globalOptions, s streams) *cobra.Command {
	var o snapshotCreateOptions
	cmd := &cobra.Command{
		Use:   "create [--live] NAME [SNAP]",
		Short: "Take a snapshot of a volume",
		Long: `Take the snapshot SNAP of volume NAME and print its name. SNAP defaults to the
UTC time, such as 20261206T205800Z.`,
		Example: `  nri-volumes volume snapshot create pg-data before-migration
  nri-volumes volume snapshot create --live web-content`,
		Args:              argsBetween(1, 2, "volume snapshot create takes NAME and an optional SNAP"),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			snap := ""
			if len(args) == 2 {
				snap = args[1]
			}
			return snapshotCreate(g, o, args[0], snap, s)
		},
	}
	cmd.Flags().BoolVar(&o.live, "live", false, "snapshot a plain volume in use, as it changes: not crash-consistent")
	return cmd
}

func snapshotCreate(g *globalOptions, o snapshotCreateOptions, name, snap string, s streams) error {
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	sn, err := store.Snapshots().Create(g.nsOrDefault(), name, snap, volumes.SnapshotOptions{Live: o.live})
	if err != nil {
		return err
	}
	if sn.Live {
		fmt.Fprintf(s.err, "nri-volumes: volume %q: snapshot %q was copied while in use; it is not crash-consistent\n", name, sn.Name)
	}
	_, err = fmt.Fprintln(s.out, sn.Name)
	return err
}

type snapshotListOptions struct {
	quiet  bool
	format string
}

func newSnapshotListCommand(g *globalOptions, s streams) *cobra.Command {
	var o snapshotListOptions
	cmd := &cobra.Command{
		Use:     "ls [-q] [--format table|json|TEMPLATE] [NAME]",
		Aliases: []string{"list"},
		Short:   "List the snapshots of a volume, or of every volume of the namespace",
		Long: `List snapshots as a table with the columns NAME VOLUME CREATED SIZE. SIZE is the
size of the volume's file system for a sized volume, and the disk usage of
the copy for a plain one. --format json prints one JSON object per line; any
other format is a Go template run for each snapshot.`,
		Example: `  nri-volumes volume snapshot ls
  nri-volumes volume snapshot ls pg-data --format '{{.Name}} {{.Copy}} {{.Frozen}}'`,
		Args:              argsBetween(0, 1, "volume snapshot ls takes at most one NAME"),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return snapshotList(g, o, name, s)
		},
	}
	cmd.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print only the snapshot names")
	cmd.Flags().StringVar(&o.format, "format", "", "table, json, or a Go template")
	return cmd
}

func snapshotList(g *globalOptions, o snapshotListOptions, name string, s streams) error {
	print, err := newSnapshotPrinter(o, s.out)
	if err != nil {
		return err
	}
	var names []string
	if name != "" {
		names = append(names, name)
	}
	store, err := g.open(names...)
	if err != nil {
		return err
	}
	defer store.Close()
	snaps, err := store.Snapshots().List(g.nsOrDefault(), name)
	if err != nil {
		return err
	}
	return print(snaps)
}

func newSnapshotPrinter(o snapshotListOptions, out io.Writer) (func([]*volumes.Snapshot) error, error) {
	switch {
	case o.quiet:
		return func(snaps []*volumes.Snapshot) error {
			for _, sn := range snaps {
				fmt.Fprintln(out, sn.Name)
			}
			return nil
		}, nil
	case o.format == "" || o.format == "table":
		return func(snaps []*volumes.Snapshot) error { return printSnapshotTable(out, snaps) }, nil
	case o.format == "json":
		return func(snaps []*volumes.Snapshot) error {
			enc := json.NewEncoder(out)
			for _, sn := range snaps {
				if err := enc.Encode(sn); err != nil {
					return err
				}
			}
			return nil
		}, nil
	}
	tmpl, err := parseTemplate(o.format)
	if err != nil {
		return nil, err
	}
	return func(snaps []*volumes.Snapshot) error {
		for _, sn := range snaps {
			if err := tmpl.Execute(out, sn); err != nil {
				return fmt.Errorf("--format: %w", err)
			}
			fmt.Fprintln(out)
		}
		return nil
	}, nil
}

func printSnapshotTable(out io.Writer, snaps []*volumes.Snapshot) error {
	w := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(w, "NAME\tVOLUME\tCREATED\tSIZE")
	for _, sn := range snaps {
		fmt.Fprintln(w, strings.Join([]string{sn.Name, sn.Volume, sn.CreatedAt.UTC().Format(time.RFC3339), bytesize.FormatFixed(sn.Size)}, "\t"))
	}
	return w.Flush()
}

func newSnapshotRemoveCommand(g *globalOptions, s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "rm NAME SNAP...",
		Aliases: []string{"remove"},
		Short:   "Remove snapshots of a volume",
		Long: `Remove the snapshots SNAP... of volume NAME, printing each one removed. A
snapshot that is not found is reported, the others are still removed, and the
command exits 1.`,
		Example:           `  nri-volumes volume snapshot rm pg-data before-migration`,
		Args:              argsBetween(2, -1, "volume snapshot rm takes NAME and at least one SNAP"),
		ValidArgsFunction: g.completeSnapshots,
		RunE: func(_ *cobra.Command, args []string) error {
			return snapshotRemove(g, args[0], args[1:], s)
		},
	}
	return cmd
}

func snapshotRemove(g *globalOptions, name string, snaps []string, s streams) error {
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	failed := false
	for _, snap := range snaps {
		if err := store.Snapshots().Remove(g.nsOrDefault(), name, snap); err != nil {
			fmt.Fprintf(s.err, "nri-volumes: %v\n", err)
			failed = true
			continue
		}
		fmt.Fprintln(s.out, snap)
	}
	if failed {
		return errReported
	}
	return nil
}

// completeSnapshots completes a volume name first, then the snapshots of
// the volume named, from a store that exists only.
func (g *globalOptions) completeSnapshots(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return g.completeVolumes(c, args, toComplete)
	}
	if volumes.ValidateNamespace(g.nsOrDefault()) != nil || volumes.ValidateName(args[0]) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	root, err := g.storeRoot()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if st, err := os.Stat(filepath.Join(root, "volumes")); err != nil || !st.IsDir() {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	store, err := volumes.Open(root)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer store.Close()
	snaps, _ := store.Snapshots().List(g.nsOrDefault(), args[0])
	names := make([]string, 0, len(snaps))
	for _, sn := range snaps {
		names = append(names, sn.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
