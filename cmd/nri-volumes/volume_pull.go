package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/volumes"
)

type pullOptions struct {
	registryOptions
	importOptions
}

func newVolumePullCommand(g *globalOptions, s streams) *cobra.Command {
	var o pullOptions
	cmd := &cobra.Command{
		Use:   "pull REF NAME",
		Short: "Make a volume from an artifact that volume push wrote",
		Long: `Pull an artifact that volume push wrote into a new volume NAME (with the
pushed volume's labels and size), or into an existing empty one that no
container uses, as volume import does. The artifact is untrusted: its
manifest and config are checked before anything is made, its declared size
against the volume's size and the limits; every layer's compressed and
uncompressed digest is verified while it streams, reading stops at the size
the config gives, and the tar is applied with import's rules (no "..", no
absolute names, nothing beneath a symlink, no device nodes). On any failure
nothing is left: a volume the pull made is removed, an existing one emptied.
The limits default to the configuration's copyUpMaxFiles and copyUpMaxSize.`,
		Example: `  nri-volumes volume pull registry.example:5000/backups/redis-data:monday redis-data`,
		Args:    argsBetween(2, 2, "volume pull takes a REF and a NAME"),
		RunE: func(_ *cobra.Command, args []string) error {
			ctx, stop := interruptible()
			defer stop()
			return volumePull(ctx, g, o, args[0], args[1], s)
		},
	}
	o.flags(cmd)
	cmd.Flags().Int64Var(&o.maxBytes, "max-bytes", -1, "most bytes to pull (0: no limit; default: limits.copyUpMaxSize)")
	cmd.Flags().Int64Var(&o.maxFiles, "max-files", -1, "most entries to pull (0: no limit; default: limits.copyUpMaxFiles)")
	return cmd
}

func volumePull(ctx context.Context, g *globalOptions, o pullOptions, ref, name string, s streams) error {
	limits, err := importLimits(g, o.importOptions)
	if err != nil {
		return err
	}
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	ns := g.nsOrDefault()
	ro, err := o.remote(g)
	if err != nil {
		return err
	}
	ro.MaxPullBytes = limits.MaxBytes // no layer downloaded past what may be kept
	art, err := ociartifact.Fetch(ctx, ref, ro)
	if err != nil {
		return err
	}
	v, err := store.Get(ns, name)
	exists := err == nil
	if err != nil && !errors.Is(err, volumes.ErrNotFound) {
		return err
	}
	size := art.Config.Limit
	if exists {
		size = v.Limit
	}
	if size > 0 && (limits.MaxBytes == 0 || size < limits.MaxBytes) {
		limits.MaxBytes = size
	}
	if err := fitsLimits(art, limits); err != nil {
		return &volumes.OpError{Op: "pull", Namespace: ns, Name: name, Err: err}
	}
	if !exists {
		if err := g.checkMaxSize(size); err != nil {
			return err
		}
		if _, err := store.Create(ns, name, volumes.CreateOptions{Labels: art.Config.Labels, Size: size}); err != nil {
			return err
		}
	}
	if err := pullInto(store, art, ns, name, limits); err != nil {
		if !exists {
			if rerr := store.Remove(ns, name); rerr != nil {
				return errors.Join(err, rerr)
			}
		}
		return err
	}
	fmt.Fprintf(s.out, "%s\n", name)
	return nil
}

// fitsLimits refuses, before any layer is read, an artifact whose config
// says it holds more than the limits allow.
func fitsLimits(art *ociartifact.Remote, limits volumes.ArchiveLimits) error {
	c := art.Config
	if limits.MaxBytes > 0 && c.Bytes > limits.MaxBytes {
		return fmt.Errorf("%w: %q holds %d bytes, more than the %d allowed", ociartifact.ErrArtifact, art.Ref, c.Bytes, limits.MaxBytes)
	}
	if limits.MaxFiles > 0 && c.Entries > limits.MaxFiles {
		return fmt.Errorf("%w: %q holds %d entries, more than the %d allowed", ociartifact.ErrArtifact, art.Ref, c.Entries, limits.MaxFiles)
	}
	return nil
}

// pullInto streams the artifact's layers, verified, into the store's
// Import, which refuses a hostile tar and empties the volume on failure.
func pullInto(store *volumes.Store, art *ociartifact.Remote, ns, name string, limits volumes.ArchiveLimits) error {
	err := ociartifact.Stream(art.WriteTar, func(r io.Reader) error {
		_, err := store.Import(ns, name, r, limits)
		return err
	})
	var opErr *volumes.OpError
	if err != nil && !errors.As(err, &opErr) {
		return &volumes.OpError{Op: "pull", Namespace: ns, Name: name, Err: err}
	}
	return err
}
