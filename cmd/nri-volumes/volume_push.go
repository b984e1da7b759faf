package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// registryOptions are the flags that say how to reach a registry; push
// and pull share them.
type registryOptions struct {
	authFile string
	caFile   string
}

func (o *registryOptions) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.authFile, "auth-file", "", "docker-style config.json with registry credentials (default: registries.authFile, else $DOCKER_CONFIG/config.json, ~/.docker/config.json, $REGISTRY_AUTH_FILE)")
	cmd.Flags().StringVar(&o.caFile, "ca-file", "", "PEM CA bundle trusted besides the system's, for the registry's TLS certificate")
}

// remote is the flags over the configuration's registries section.
func (o registryOptions) remote(g *globalOptions) (ociartifact.RemoteOptions, error) {
	cfg, err := g.config()
	if err != nil {
		return ociartifact.RemoteOptions{}, err
	}
	ro := ociartifact.RemoteOptions{AuthFile: o.authFile, CAFile: o.caFile, UserAgent: "nri-volumes",
		InsecureHosts: cfg.Registries.InsecureHosts}
	if ro.AuthFile == "" {
		ro.AuthFile = cfg.Registries.AuthFile
	}
	if ro.CAFile == "" {
		ro.CAFile = cfg.Registries.CAFile
	}
	return ro, nil
}

type pushOptions struct {
	registryOptions
	live      bool
	tmpDir    string
	layerSize string
}

func newVolumePushCommand(g *globalOptions, s streams) *cobra.Command {
	var o pushOptions
	cmd := &cobra.Command{
		Use:   "push NAME REF",
		Short: "Push a volume's data to an OCI registry",
		Long: `Push the data of a volume to an OCI registry as an artifact: an OCI image
manifest whose layers are plain tar+gzip (so crane export and oras pull read
it) and whose config records the volume's owner, mode, labels, size and
backend. The tars are deterministic, and the data is split into layers by
content, so a second push of unchanged data uploads nothing and one after a
small change uploads a small part. A sized volume that a container uses is
read from a temporary snapshot, as it was at one instant. A plain volume
that a container uses is refused unless --live: its data would be read while
it is written. TLS is always
verified; plain HTTP is used only for the configuration's
registries.insecureHosts. Credentials come from a docker-style auth file.`,
		Example: `  nri-volumes volume push redis-data registry.example:5000/backups/redis-data:monday
  nri-volumes -n shop volume push --live cart registry.example:5000/shop/cart:v1`,
		Args:              argsBetween(2, 2, "volume push takes a NAME and a REF"),
		ValidArgsFunction: g.completeVolumes,
		RunE: func(_ *cobra.Command, args []string) error {
			ctx, stop := interruptible()
			defer stop()
			return volumePush(ctx, g, o, args[0], args[1], s)
		},
	}
	o.flags(cmd)
	cmd.Flags().BoolVar(&o.live, "live", false, "push a volume that a container uses, as it is at the moment it is read")
	cmd.Flags().StringVar(&o.tmpDir, "tmp-dir", "", "directory for the layers while they are pushed (default: $TMPDIR)")
	cmd.Flags().StringVar(&o.layerSize, "layer-size", "16Mi", "smallest layer the data is split into (largest: 4 times that); smaller re-uploads less after a change, with more layers")
	return cmd
}

// interruptible is a context that SIGINT and SIGTERM cancel, so that an
// interrupted push or pull cleans up (its temporary layers, the volume it
// made) instead of dying half-way.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func volumePush(ctx context.Context, g *globalOptions, o pushOptions, name, ref string, s streams) error {
	layerSize, err := config.ParseSize(o.layerSize)
	if err != nil || layerSize < 4096 {
		return fmt.Errorf("%w: --layer-size %q: a size of at least 4Ki", errUsage, o.layerSize)
	}
	ro, err := o.remote(g)
	if err != nil {
		return err
	}
	store, err := g.open(name)
	if err != nil {
		return err
	}
	defer store.Close()
	ns := g.nsOrDefault()
	v, err := store.Get(ns, name)
	if err != nil {
		return err
	}
	// A sized volume in use is read from a temporary snapshot (see
	// volumes.Store.Export); a plain one cannot be, and needs --live.
	if len(v.UsedBy) > 0 && !v.CanSnapshot() && !o.live {
		return &volumes.OpError{Op: "push", Namespace: ns, Name: name, Refs: v.UsedBy,
			Err: fmt.Errorf("%w (pass --live to push it while it is written)", volumes.ErrInUse)}
	}
	dir, err := os.MkdirTemp(o.tmpDir, ".nri-volumes-push-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	art, err := buildArtifact(ctx, store, v, dir, ociartifact.SplitFor(int64(layerSize)))
	if err != nil {
		return err
	}
	stats, err := art.Push(ctx, ref, ro)
	if err != nil {
		return &volumes.OpError{Op: "push", Namespace: ns, Name: name, Err: err}
	}
	fmt.Fprintf(s.out, "%s %d layers, uploaded %d blobs, %d bytes\n", stats.Digest, stats.Layers, stats.Blobs, stats.Bytes)
	return nil
}

// buildArtifact exports the volume's data straight into the artifact's
// layers in dir; the volume is read once.
func buildArtifact(ctx context.Context, store *volumes.Store, v *volumes.Volume, dir string, split ociartifact.SplitOptions) (*ociartifact.Artifact, error) {
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		_, err := store.Export(v.Namespace, v.Name, pw)
		pw.CloseWithError(err)
		exported <- err
	}()
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(ctx.Err()) })
	defer stop()
	meta := ociartifact.Meta{
		Volume: v.Name, Namespace: v.Namespace, Labels: v.Labels,
		Limit: v.Limit, Backend: string(v.Backend),
		Created: time.Now().UTC().Format(time.RFC3339),
	}
	art, err := ociartifact.Build(pr, dir, meta, split)
	pr.CloseWithError(io.ErrClosedPipe) // the export stops if the build did
	if xerr := <-exported; xerr != nil {
		return nil, xerr
	}
	if err != nil {
		return nil, &volumes.OpError{Op: "push", Namespace: v.Namespace, Name: v.Name, Err: err}
	}
	return art, nil
}
