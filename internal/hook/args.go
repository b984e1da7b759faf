package hook

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// CopyUpArgs is the command line of the copyup hook: the plugin writes it
// with Argv into the OCI hook it adds, and the hook reads it back with
// ParseCopyUpArgs, so that the two sides cannot drift apart.
type CopyUpArgs struct {
	// Root is the volume store's root, an absolute path.
	Root string
	// MaxBytes and MaxFiles bound one volume's copy (0: no limit).
	MaxBytes, MaxFiles int64
	// ImageHex is the hex of the image's config digest, if the runtime
	// sent one: the hook records under it the targets where the image has
	// nothing to copy.
	ImageHex string
	// Pod and PodMaxBytes bound what the copy-ups of one pod sandbox write
	// in all (limits.copyUpMaxSizePerPod); without a pod, nothing does.
	Pod         string
	PodMaxBytes int64
	// CopyUps are the volumes to fill from the image, and where from.
	CopyUps []volumes.CopyUpSpec
	// KeepOwners are the volumes, among CopyUps, created with an owner or
	// mode, which an empty image directory does not override.
	KeepOwners []volumes.VolumeRef
	// Chowns are the volumes whose root goes to the container's user
	// (option U), after any copy-up.
	Chowns []volumes.VolumeRef
	// Syncs are the named volumes, among CopyUps, that the hook makes
	// durable before the container starts.
	Syncs []volumes.VolumeRef
	// LogLevel is the hook's log level; empty means info.
	LogLevel string
}

// Argv is the hook's command line for a, from the hook's name on: what Run
// takes, and what `nri-volumes hook` or nri-volumes-hook take after their
// own name.
func (a *CopyUpArgs) Argv() []string {
	args := []string{"copyup", "--root", a.Root,
		"--max-bytes", strconv.FormatInt(a.MaxBytes, 10),
		"--max-files", strconv.FormatInt(a.MaxFiles, 10)}
	if a.ImageHex != "" {
		args = append(args, "--image", "sha256:"+a.ImageHex)
	}
	if a.Pod != "" {
		args = append(args, "--pod", a.Pod, "--pod-max-bytes", strconv.FormatInt(a.PodMaxBytes, 10))
	}
	if a.LogLevel != "" {
		args = append(args, "--log-level", a.LogLevel)
	}
	for _, s := range a.CopyUps {
		args = append(args, "--volume", s.String())
	}
	for _, r := range a.KeepOwners {
		args = append(args, "--keep-owner", r.String())
	}
	for _, r := range a.Chowns {
		args = append(args, "--chown", r.String())
	}
	for _, r := range a.Syncs {
		args = append(args, "--sync", r.String())
	}
	return args
}

// ParseCopyUpArgs reads the command line that Argv writes, from the hook's
// name on, and checks it.
func ParseCopyUpArgs(argv []string) (CopyUpArgs, error) {
	var a CopyUpArgs
	if len(argv) == 0 || argv[0] != "copyup" {
		return a, errors.New("not a copyup command line")
	}
	fs := flag.NewFlagSet("hook copyup", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error is returned and printed once by main
	fs.StringVar(&a.Root, "root", "", "volume store root (required)")
	fs.Int64Var(&a.MaxBytes, "max-bytes", 0, "most bytes to copy into one volume (0: no limit)")
	fs.Int64Var(&a.MaxFiles, "max-files", 0, "most entries to copy into one volume (0: no limit)")
	fs.StringVar(&a.Pod, "pod", "", "pod sandbox ID whose copy-ups --pod-max-bytes bounds")
	fs.Int64Var(&a.PodMaxBytes, "pod-max-bytes", 0, "most bytes the copy-ups of the pod write in all (0: no limit)")
	fs.StringVar(&a.LogLevel, "log-level", "", "log level, info if not given (debug shows a summary per volume)")
	fs.Func("image", "config digest (sha256:HEX) of the container's image, under which targets with nothing to copy are recorded", func(s string) error {
		h, err := volumes.ParseImageDigest(s)
		a.ImageHex = h
		return err
	})
	fs.Func("volume", "NAMESPACE/NAME=/target to fill (repeatable)", func(s string) error {
		v, err := volumes.ParseCopyUpSpec(s)
		if err != nil {
			return err
		}
		a.CopyUps = append(a.CopyUps, v)
		return nil
	})
	fs.Func("keep-owner", "NAMESPACE/NAME of a --volume that keeps its owner and mode if the image's directory is empty (repeatable)", refFlag(&a.KeepOwners))
	fs.Func("chown", "NAMESPACE/NAME whose root goes to the container's user, once (repeatable)", refFlag(&a.Chowns))
	fs.Func("sync", "NAMESPACE/NAME to make durable (fsync its metadata and directories) before the container starts (repeatable)", refFlag(&a.Syncs))
	if err := fs.Parse(argv[1:]); err != nil {
		return a, err
	}
	switch {
	case fs.NArg() > 0:
		return a, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case a.Root == "":
		return a, errors.New("--root is required")
	case !filepath.IsAbs(a.Root):
		return a, fmt.Errorf("--root %q: not an absolute path", a.Root)
	case a.MaxBytes < 0:
		return a, fmt.Errorf("--max-bytes %d: must not be negative", a.MaxBytes)
	case a.MaxFiles < 0:
		return a, fmt.Errorf("--max-files %d: must not be negative", a.MaxFiles)
	case a.PodMaxBytes < 0:
		return a, fmt.Errorf("--pod-max-bytes %d: must not be negative", a.PodMaxBytes)
	case a.PodMaxBytes > 0 && a.Pod == "":
		return a, errors.New("--pod-max-bytes needs --pod")
	case len(a.CopyUps) == 0 && len(a.Chowns) == 0:
		return a, errors.New("no --volume or --chown given")
	}
	return a, nil
}

// refFlag is a flag.Func parser that appends each NAMESPACE/NAME to refs.
func refFlag(refs *[]volumes.VolumeRef) func(string) error {
	return func(s string) error {
		v, err := volumes.ParseVolumeRef(s)
		if err != nil {
			return err
		}
		*refs = append(*refs, v)
		return nil
	}
}
