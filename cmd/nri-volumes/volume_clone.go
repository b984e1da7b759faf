package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/volumes"
)

type cloneOptions struct {
	labels []string
	opts   []string
	live   bool
}

func newVolumeCloneCommand(g *globalOptions, s streams) *cobra.Command {
	var o cloneOptions
	cmd := &cobra.Command{
		Use:   "clone [--label K=V]... [-o size=SIZE] [--live] SRC[@SNAP] DST",
		Short: "Make a new volume as a copy of a volume or of one of its snapshots",
		Long: `Make the named volume DST, independent and writable, as a copy of snapshot SNAP
of volume SRC, or of SRC as it is now, and print its name. A clone of a sized
volume is a reflink of its image in O(1) on xfs (reflink=1) or btrfs, a sparse
copy elsewhere; of SRC in use, its file system is frozen for the copy, as for
a snapshot. -o size=SIZE makes the clone of a sized volume larger; never
smaller. A plain directory volume in use is refused unless --live.`,
		Example: `  nri-volumes volume clone pg-data@before-migration pg-test
  nri-volumes volume clone -o size=20Gi --label env=ci fixtures ci-1234`,
		Args:              argsBetween(2, 2, "volume clone takes SRC[@SNAP] and DST"),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			return volumeClone(g, o, args[0], args[1], s)
		},
	}
	stringArray(cmd.Flags(), &o.labels, "label", "", "a label KEY=VALUE of the new volume (repeatable)")
	stringArray(cmd.Flags(), &o.opts, "opt", "o", "size=SIZE: grow the clone of a sized volume to SIZE")
	cmd.Flags().BoolVar(&o.live, "live", false, "clone a plain volume in use, as it changes: not crash-consistent")
	return cmd
}

func volumeClone(g *globalOptions, o cloneOptions, src, dst string, s streams) error {
	src, snap, hasSnap := strings.Cut(src, "@")
	if hasSnap {
		if err := volumes.ValidateSnapshotName(snap); err != nil {
			return err
		}
	}
	labels, err := parseLabels(o.labels)
	if err != nil {
		return err
	}
	opts, err := parseCreateOpts(o.opts)
	if err != nil {
		return err
	}
	if opts.UID != nil || opts.GID != nil || opts.Mode != nil {
		return fmt.Errorf("%w: volume clone takes only -o size=SIZE; the clone has the owner and mode of its source", volumes.ErrInvalid)
	}
	store, err := g.open(src, dst)
	if err != nil {
		return err
	}
	defer store.Close()
	if err := g.checkMaxSize(opts.Size); err != nil {
		return err
	}
	res, err := store.Clone(g.nsOrDefault(), src, snap, dst, volumes.CloneOptions{Labels: labels, Size: opts.Size, Live: o.live})
	if err != nil {
		return err
	}
	if res.Live {
		fmt.Fprintf(s.err, "nri-volumes: volume %q: copied from %q while in use; it is not crash-consistent\n", dst, src)
	}
	_, err = fmt.Fprintln(s.out, res.Volume.Name)
	return err
}
