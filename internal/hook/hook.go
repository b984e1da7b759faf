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
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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

// copyUpOptions is what one copyup run works with: its command line and
// the copy limits that the command line and the container's spec make.
type copyUpOptions struct {
	CopyUpArgs
	limits copyup.Options
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
		return copyUp(args, stdin)
	default:
		return fmt.Errorf("hook: unknown hook %q (known: copyup)", args[0])
	}
}

// copyUp copies the image's content at each volume's target into the
// volume, if the volume is still empty: the createRuntime hook behind
// Docker-style copy-up.
func copyUp(args []string, stdin io.Reader) error {
	a, err := ParseCopyUpArgs(args)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	opts := copyUpOptions{CopyUpArgs: a, limits: copyup.Options{
		MaxBytes: a.MaxBytes, MaxFiles: a.MaxFiles, MaxLinkBytes: copyup.DefaultMaxLinkBytes}}
	if opts.LogLevel == "" {
		opts.LogLevel = "info"
	}
	level, err := logrus.ParseLevel(opts.LogLevel)
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
		opts.ImageHex = ""
	}
	opts.limits.Log = log

	store, err := volumes.Open(opts.Root, volumes.WithoutSweep())
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	defer store.Close()
	// First, while the plugin's own sync of a new volume has most likely
	// left nothing to write: the copy-up below dirties the volume again.
	for _, v := range opts.Syncs {
		if err := store.CopyUps().Persist(v.Namespace, v.Name); err != nil {
			return fmt.Errorf("hook copyup: --sync %s: %w", v, err)
		}
	}

	c := &hookCopier{opts: opts, store: store, rootfs: rootfs, log: log}
	if opts.Pod == "" {
		_, err = c.copyAll(0)
	} else {
		err = store.PodBudgets().Charge(opts.Pod, c.copyAll)
	}
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	return chownVolumes(store, spec, opts.Chowns, log)
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
		done, err := store.CopyUps().ChownRoot(v.Namespace, v.Name, uid, gid)
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
	for i := len(c.opts.CopyUps) - 1; i >= 0; i-- {
		v := c.opts.CopyUps[i]
		vlog := c.log.WithFields(logrus.Fields{"volume": v.VolumeRef.String(), "target": v.Target})
		start := time.Now()
		stats, ran, reason, err := c.copyOne(v, used+written, copied, vlog)
		if ran || err != nil {
			res := volumes.CopyUpResult{Reason: reason, Bytes: stats.Bytes, Files: stats.Files, Duration: time.Since(start)}
			if rerr := c.store.CopyUpLog().Record(res); rerr != nil {
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
	stats, pending, err := c.store.CopyUps().FillClone(v.Namespace, v.Name, limits)
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
		rootDefault := src.Dir && !slices.Contains(c.opts.KeepOwners, v.VolumeRef)
		marked, copyNeeded, err := c.store.CopyUps().MarkEmpty(v.Namespace, v.Name, rootDefault)
		if err != nil {
			return stats, false, volumes.CopyUpOther, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
		}
		if !copyNeeded {
			vlog.Debugf("copy-up: the image has nothing to copy; marked done: %t", marked)
			return stats, ok && marked, "", nil
		}
	}
	limits.KeepEmptyRoot = slices.Contains(c.opts.KeepOwners, v.VolumeRef)
	ran := false
	err = c.store.CopyUps().Copy(v.Namespace, v.Name, func(dir string) error {
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
	if c.opts.ImageHex == "" {
		return
	}
	if err := c.store.EmptyTargets().Record(c.opts.ImageHex, target); err != nil {
		vlog.WithError(err).Warn("copy-up: the image's empty target is not recorded; later containers of the image run the hook")
	}
}

// copyError is the failure of a copy into v that wrote stats, with which
// of volumes' CopyUp reasons it is; budget says the pod's budget, of which
// used bytes were used before, bounded it.
func (c *hookCopier) copyError(v volumes.CopyUpSpec, stats copyup.Stats, budget bool, used int64, err error) (string, error) {
	switch {
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		return volumes.CopyUpNoSpace, tooSmallError(c.store, v, stats, err)
	case budget && errors.Is(err, copyup.ErrLimit):
		return volumes.CopyUpPodBudget, fmt.Errorf("volume %s at %s: %w: the copy-ups of a pod may write %d bytes in all (limits.copyUpMaxSizePerPod), and this pod's wrote %d",
			v.VolumeRef, v.Target, err, c.opts.PodMaxBytes, used)
	case errors.Is(err, copyup.ErrLimit):
		return volumes.CopyUpLimit, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
	default:
		return volumes.CopyUpOther, fmt.Errorf("volume %s at %s: %w", v.VolumeRef, v.Target, err)
	}
}

// limits are the bounds of the next copy, given that the pod's copy-ups
// wrote used bytes; budget says the pod's budget is the tighter bound.
func (c *hookCopier) limits(used int64) (copyup.Options, bool) {
	limits := c.opts.limits
	var byPod bool
	limits.MaxBytes, byPod = volumes.PodCopyUpMaxBytes(limits.MaxBytes, c.opts.PodMaxBytes, used)
	return limits, byPod
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
