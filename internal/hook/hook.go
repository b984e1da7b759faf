// Package hook is the OCI hook the plugin adds to containers: copyup fills
// new volumes from the image and chowns those mounted with U. runc runs it
// as a createRuntime hook, in the host's namespaces, with the container's
// state on stdin, before the container's process starts. Both
// nri-volumes-hook (small, quick to start) and `nri-volumes hook` run it.
// Each run is its own process; the store's locks order it against the
// plugin and other hooks.
package hook

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/internal/idmap"
	"github.com/nri-volumes/nri-volumes/volumes"
	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// maxStateSize bounds the OCI state document read from stdin. Real ones are
// a few hundred bytes plus annotations.
const maxStateSize = 1 << 20

// copyUpOptions are the flags of `nri-volumes hook copyup`.
type copyUpOptions struct {
	root     string
	limits   copyup.Options
	volumes  []volumes.CopyUpSpec
	logLevel string
	// pod and podMaxBytes bound what the copy-ups of one pod sandbox write
	// in all (limits.copyUpMaxSizePerPod); without a pod, nothing does.
	pod         string
	podMaxBytes int64
	// keepOwner holds NS/NAME of the volumes that keep their owner and
	// mode when the image's directory is empty.
	keepOwner map[volumes.VolumeRef]bool
	// chown are the volumes whose root goes to the container's user.
	chown []volumes.VolumeRef
	// sync are the volumes to make durable before the container starts.
	sync []volumes.VolumeRef
	// imageHex is the hex of the image's config digest, if known: the
	// targets where the image has nothing to copy are recorded under it.
	imageHex string
}

// maxSpecSize bounds the OCI spec (config.json) the hook reads.
const maxSpecSize = 16 << 20

// Usage is the command line of the hooks, for help texts.
const Usage = "copyup --root DIR --volume NS/NAME=/target... [--image sha256:HEX] [--max-bytes N] [--max-files N]"

// Run runs the OCI hook args[0] with the rest of args as its flags and the
// container's state read from stdin. runc fails the container's start with
// the hook's stderr if it exits non-zero.
func Run(args []string, stdin io.Reader) error {
	if len(args) == 0 {
		return errors.New("hook: name the hook to run: copyup")
	}
	switch args[0] {
	case "copyup":
		return copyUp(args[1:], stdin)
	default:
		return fmt.Errorf("hook: unknown hook %q (known: copyup)", args[0])
	}
}

// copyUp copies the image's content at each volume's target into the
// volume, if the volume is still empty: the createRuntime hook behind
// Docker-style copy-up.
func copyUp(args []string, stdin io.Reader) error {
	opts, err := parseCopyUpFlags(args)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	level, err := logrus.ParseLevel(opts.logLevel)
	if err != nil {
		return fmt.Errorf("hook copyup: --log-level: %w", err)
	}
	// This process does nothing else, so the standard logger is its own;
	// copyup logs skipped files to it at debug level.
	logrus.SetOutput(os.Stderr)
	logrus.SetLevel(level)

	state, err := readHookState(stdin)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	rootfs := filepath.Join(state.Bundle, "rootfs")
	log := logrus.WithField("container", state.ID)
	spec, err := readBundleSpec(state.Bundle)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	mapping, err := idmap.FromSpec(spec)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	if mapping != nil {
		// The rootfs shows the image's ids shifted into the container's
		// range; the volume, idmapped into the container, holds them as
		// the container sees them.
		opts.limits.Owners = mapping.ToContainer
		// Whether a directory is the bare mount point runc made is judged
		// on the ids mapped back, which a rootfs that is not shifted
		// would fool: an image directory owned by the range's first id
		// would pass for root's. Record nothing for the image from here;
		// containers without a user namespace do.
		opts.imageHex = ""
	}
	opts.limits.Log = log

	store, err := volumes.OpenForCopyUp(opts.root)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	defer store.Close()
	// First, while the plugin's own sync of a new volume has most likely
	// left nothing to write: the copy-up below dirties the volume again.
	for _, v := range opts.sync {
		if err := store.Sync(v.Namespace, v.Name); err != nil {
			return fmt.Errorf("hook copyup: --sync %s: %w", v, err)
		}
	}

	c := &hookCopier{opts: opts, store: store, rootfs: rootfs, log: log}
	if opts.pod == "" {
		_, err = c.copyAll(0)
	} else {
		err = store.ChargePodCopyUp(opts.pod, c.copyAll)
	}
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	return chownVolumes(store, spec, opts.chown, log)
}

// chownVolumes gives the root of each volume to the container's user, as
// its OCI spec's process.user names it: ids as the container sees them,
// which is what an idmapped volume holds. Each volume is chowned once.
func chownVolumes(store *volumes.Store, spec *specs.Spec, vols []volumes.VolumeRef, log *logrus.Entry) error {
	if len(vols) == 0 {
		return nil
	}
	if spec.Process == nil {
		return errors.New("hook copyup: --chown: the OCI spec has no process.user")
	}
	uid, gid := int(spec.Process.User.UID), int(spec.Process.User.GID)
	for _, v := range vols {
		done, err := store.ChownRoot(v.Namespace, v.Name, uid, gid)
		if err != nil {
			return fmt.Errorf("hook copyup: --chown %s: %w", v, err)
		}
		if done {
			log.WithField("volume", v.String()).Debugf("chowned the volume's root to %d:%d", uid, gid)
		}
	}
	return nil
}

// readBundleSpec reads the container's OCI spec from its bundle.
func readBundleSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("reading the OCI spec: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSpecSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading the OCI spec: %w", err)
	}
	if len(data) > maxSpecSize {
		return nil, fmt.Errorf("the OCI spec %s is larger than %d bytes", f.Name(), maxSpecSize)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("parsing the OCI spec %s: %w", f.Name(), err)
	}
	return &spec, nil
}

// hookCopier runs the copy-ups of one container.
type hookCopier struct {
	opts   copyUpOptions
	store  *volumes.Store
	rootfs string
	log    *logrus.Entry
}

// copyAll copies into each volume, given that the pod's copy-ups wrote used
// bytes before, and returns the bytes it wrote. An image directory that
// several VOLUMEs name (through symlinks in the image) is copied once per
// container, into the volume mounted last, the one the container sees there.
// Each copy, and each failure, is recorded for the plugin's metrics.
func (c *hookCopier) copyAll(used int64) (int64, error) {
	var written int64
	copied := map[copyup.SourceID]string{}
	for i := len(c.opts.volumes) - 1; i >= 0; i-- {
		v := c.opts.volumes[i]
		vlog := c.log.WithFields(logrus.Fields{"volume": v.VolumeRef.String(), "target": v.Target})
		start := time.Now()
		stats, ran, reason, err := c.copyOne(v, used+written, copied, vlog)
		if ran || err != nil {
			res := volumes.CopyUpResult{Reason: reason, Bytes: stats.Bytes, Files: stats.Files, Duration: time.Since(start)}
			if rerr := c.store.RecordCopyUp(res); rerr != nil {
				vlog.WithError(rerr).Warn("copy-up: not recorded for the plugin's metrics")
			}
		}
		if err != nil {
			return written, err
		}
		written += stats.Bytes
	}
	return written, nil
}

// copyOne copies into v, given that the pod's copy-ups wrote used bytes
// before and the image directories copied so far. It reports what it
// copied, whether it copied at all (a filled volume, or an image without
// the directory, is no copy), and on failure which of volumes' CopyUp
// reasons it is. Where the image has nothing to copy (no directory, or the
// bare mount point runc made), it records that for the image, unless
// another mount hides what the image holds there, and marks the volume done
// without staging a copy.
func (c *hookCopier) copyOne(v volumes.CopyUpSpec, used int64, copied map[copyup.SourceID]string, vlog *logrus.Entry) (copyup.Stats, bool, string, error) {
	// A clone still to be copied is filled from its source, never from
	// the image, within the same limits and budget.
	limits, budget := c.limits(used)
	stats, pending, err := c.store.CopyUpClone(v.Namespace, v.Name, limits)
	if pending || err != nil {
		if err != nil {
			reason, err := c.copyError(v, stats, budget, used, err)
			return stats, true, reason, err
		}
		vlog.Debugf("copy-up: cloned from its source: %d files, %d bytes", stats.Files, stats.Bytes)
		return stats, true, "", nil
	}
	src, err := copyup.Source(c.rootfs, v.Target, c.opts.limits.Owners)
	if err != nil {
		return stats, false, volumes.CopyUpOther, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
	}
	ok := src.Dir
	first, dup := copied[src.ID]
	switch {
	case ok && dup:
		vlog.Infof("copy-up: the image directory is the one copied for %s already; copied once", first)
		ok = false
	case ok:
		copied[src.ID] = v.Target
	}
	if !dup && (!src.Dir || src.Bare) {
		if !src.Covered {
			c.recordEmpty(v.Target, vlog)
		}
		// A bare mount point gives _data root:root 0755, unless the
		// volume keeps the owner it was made with.
		rootDefault := src.Dir && !c.opts.keepOwner[v.VolumeRef]
		marked, copyNeeded, err := c.store.MarkCopyUpEmpty(v.Namespace, v.Name, rootDefault)
		if err != nil {
			return stats, false, volumes.CopyUpOther, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
		}
		if !copyNeeded {
			vlog.Debugf("copy-up: the image has nothing to copy; marked done: %t", marked)
			return stats, ok && marked, "", nil
		}
	}
	limits.KeepEmptyRoot = c.opts.keepOwner[v.VolumeRef]
	ran := false
	err = c.store.CopyUp(v.Namespace, v.Name, func(dir string) error {
		ran = true
		if !ok {
			return nil
		}
		var err error
		stats, err = copyup.Copy(c.rootfs, v.Target, dir, limits)
		return err
	})
	if err != nil {
		reason, err := c.copyError(v, stats, budget, used, err)
		return stats, ran, reason, err
	}
	if !ran {
		vlog.Debug("copy-up: volume already filled, nothing to do")
		return stats, false, "", nil
	}
	vlog.Debugf("copy-up: %d files, %d dirs, %d symlinks, %d hard links, %d bytes; %d skipped",
		stats.Files, stats.Dirs, stats.Symlinks, stats.Hardlinks, stats.Bytes, stats.Skipped)
	return stats, ok, "", nil
}

// recordEmpty records that the container's image has nothing to copy at
// target, so that the plugin adds no hook for it to later containers of the
// image. A failure only costs those containers a hook run.
func (c *hookCopier) recordEmpty(target string, vlog *logrus.Entry) {
	if c.opts.imageHex == "" {
		return
	}
	if err := c.store.RecordImageTargetEmpty(c.opts.imageHex, target); err != nil {
		vlog.WithError(err).Warn("copy-up: the image's empty target is not recorded; later containers of the image run the hook")
	}
}

// limits are the bounds of the next copy, given that the pod's copy-ups
// wrote used bytes; budget says the pod's budget is the tighter bound.
// copyError is the failure of a copy into v that wrote stats, with which
// of volumes' CopyUp reasons it is; budget says the pod's budget, of which
// used bytes were used before, bounded it.
func (c *hookCopier) copyError(v volumes.CopyUpSpec, stats copyup.Stats, budget bool, used int64, err error) (string, error) {
	switch {
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		return volumes.CopyUpNoSpace, tooSmallError(c.store, v, stats, err)
	case budget && errors.Is(err, copyup.ErrLimit):
		return volumes.CopyUpPodBudget, fmt.Errorf("volume %s at %s: %w: the copy-ups of a pod may write %d bytes in all (limits.copyUpMaxSizePerPod), and this pod's wrote %d",
			v.VolumeRef, v.Target, err, c.opts.podMaxBytes, used)
	case errors.Is(err, copyup.ErrLimit):
		return volumes.CopyUpLimit, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
	default:
		return volumes.CopyUpOther, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
	}
}

func (c *hookCopier) limits(used int64) (copyup.Options, bool) {
	limits := c.opts.limits
	var byPod bool
	limits.MaxBytes, byPod = volumes.PodCopyUpMaxBytes(limits.MaxBytes, c.opts.podMaxBytes, used)
	return limits, byPod
}

func parseCopyUpFlags(args []string) (copyUpOptions, error) {
	opts := copyUpOptions{keepOwner: map[volumes.VolumeRef]bool{}}
	fs := flag.NewFlagSet("hook copyup", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error is returned and printed once by main
	fs.StringVar(&opts.root, "root", "", "volume store root (required)")
	fs.Int64Var(&opts.limits.MaxBytes, "max-bytes", 0, "most bytes to copy into one volume (0: no limit)")
	fs.Int64Var(&opts.limits.MaxFiles, "max-files", 0, "most entries to copy into one volume (0: no limit)")
	fs.StringVar(&opts.pod, "pod", "", "pod sandbox ID whose copy-ups --pod-max-bytes bounds")
	fs.Int64Var(&opts.podMaxBytes, "pod-max-bytes", 0, "most bytes the copy-ups of the pod write in all (0: no limit)")
	fs.StringVar(&opts.logLevel, "log-level", "info", "log level (debug shows a summary per volume)")
	fs.Func("image", "config digest (sha256:HEX) of the container's image, under which targets with nothing to copy are recorded", func(s string) error {
		h, err := volumes.ParseImageDigest(s)
		opts.imageHex = h
		return err
	})
	fs.Func("volume", "NAMESPACE/NAME=/target to fill (repeatable)", func(s string) error {
		v, err := volumes.ParseCopyUpSpec(s)
		if err != nil {
			return err
		}
		opts.volumes = append(opts.volumes, v)
		return nil
	})
	fs.Func("keep-owner", "NAMESPACE/NAME of a --volume that keeps its owner and mode if the image's directory is empty (repeatable)", refFlag(func(v volumes.VolumeRef) { opts.keepOwner[v] = true }))
	fs.Func("chown", "NAMESPACE/NAME whose root goes to the container's user, once (repeatable)", refFlag(func(v volumes.VolumeRef) { opts.chown = append(opts.chown, v) }))
	fs.Func("sync", "NAMESPACE/NAME to make durable (fsync its metadata and directories) before the container starts (repeatable)", refFlag(func(v volumes.VolumeRef) { opts.sync = append(opts.sync, v) }))
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	opts.limits.MaxLinkBytes = copyup.DefaultMaxLinkBytes
	switch {
	case fs.NArg() > 0:
		return opts, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case opts.root == "":
		return opts, errors.New("--root is required")
	case !filepath.IsAbs(opts.root):
		return opts, fmt.Errorf("--root %q: not an absolute path", opts.root)
	case opts.limits.MaxBytes < 0:
		return opts, fmt.Errorf("--max-bytes %d: must not be negative", opts.limits.MaxBytes)
	case opts.limits.MaxFiles < 0:
		return opts, fmt.Errorf("--max-files %d: must not be negative", opts.limits.MaxFiles)
	case opts.podMaxBytes < 0:
		return opts, fmt.Errorf("--pod-max-bytes %d: must not be negative", opts.podMaxBytes)
	case opts.podMaxBytes > 0 && opts.pod == "":
		return opts, errors.New("--pod-max-bytes needs --pod")
	case len(opts.volumes) == 0 && len(opts.chown) == 0:
		return opts, errors.New("no --volume or --chown given")
	}
	return opts, nil
}

// refFlag is a flag.Func parser that hands each NAMESPACE/NAME to add.
func refFlag(add func(volumes.VolumeRef)) func(string) error {
	return func(s string) error {
		v, err := volumes.ParseVolumeRef(s)
		if err != nil {
			return err
		}
		add(v)
		return nil
	}
}

// readHookState reads the OCI state document a runtime gives its hooks.
func readHookState(r io.Reader) (*specs.State, error) {
	if f, ok := r.(*os.File); ok && fsx.IsTerminal(f) {
		return nil, errors.New("stdin is a terminal: the container runtime runs this hook with the OCI state on stdin")
	}
	data, err := io.ReadAll(io.LimitReader(r, maxStateSize+1))
	if err != nil {
		return nil, fmt.Errorf("read OCI state from stdin: %w", err)
	}
	if len(data) > maxStateSize {
		return nil, fmt.Errorf("OCI state on stdin is larger than %d bytes", maxStateSize)
	}
	var state specs.State
	if err := json.Unmarshal(data, &state); err != nil {
		return nil, fmt.Errorf("parse OCI state from stdin: %w", err)
	}
	if !filepath.IsAbs(state.Bundle) {
		return nil, fmt.Errorf("OCI state: bundle %q is not an absolute path", state.Bundle)
	}
	return &state, nil
}

// tooSmallError says that the image's content did not fit a sized volume:
// which volume, its size and how far the copy got before the kernel said no.
func tooSmallError(store *volumes.Store, v volumes.CopyUpSpec, stats copyup.Stats, err error) error {
	size := "its size"
	if vol, gerr := store.Get(v.Namespace, v.Name); gerr == nil && vol.Limit > 0 {
		size = "its size " + volumes.FormatBytes(vol.Limit)
	}
	return fmt.Errorf("volume %s at %s: the image's content does not fit %s: "+
		"copy-up stopped after %d files (%s), %d directories and %d symlinks, and was undone: %w",
		v.VolumeRef, v.Target, size, stats.Files, volumes.FormatBytes(stats.Bytes), stats.Dirs, stats.Symlinks, err)
}
