package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/volumes"
	"github.com/nri-volumes/nri-volumes/volumes/copyup"
)

// hookStdin is where an OCI hook reads the container state the runtime
// writes; tests replace it.
var hookStdin io.Reader = os.Stdin

// maxStateSize bounds the OCI state document read from stdin. Real ones are
// a few hundred bytes plus annotations.
const maxStateSize = 1 << 20

// copyUpVolume is one --volume of the copyup hook.
type copyUpVolume struct {
	ns, name, target string
}

// copyUpOptions are the flags of `nri-volumes hook copyup`.
type copyUpOptions struct {
	root     string
	limits   copyup.Options
	volumes  []copyUpVolume
	logLevel string
}

// hookCommand runs an OCI hook that the plugin adds to containers. runc runs
// it in the host's namespaces with the container's state on stdin, and fails
// the container's start with the hook's stderr if it exits non-zero.
func hookCommand(args []string) error {
	if len(args) == 0 {
		return errors.New("hook: name the hook to run: copyup")
	}
	switch args[0] {
	case "copyup":
		return hookCopyUp(args[1:])
	default:
		return fmt.Errorf("hook: unknown hook %q (known: copyup)", args[0])
	}
}

// hookCopyUp copies the image's content at each volume's target into the
// volume, if the volume is still empty: the createRuntime hook behind
// Docker-style copy-up.
func hookCopyUp(args []string) error {
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

	state, err := readHookState(hookStdin)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	rootfs := filepath.Join(state.Bundle, "rootfs")
	log := logrus.WithField("container", state.ID)

	store, err := volumes.OpenForCopyUp(opts.root)
	if err != nil {
		return fmt.Errorf("hook copyup: %w", err)
	}
	defer store.Close()

	for _, v := range opts.volumes {
		var stats copyup.Stats
		copied := false
		err := store.CopyUp(v.ns, v.name, func(dataDir string) error {
			var err error
			copied = true
			stats, err = copyup.Copy(rootfs, v.target, dataDir, opts.limits)
			return err
		})
		if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
			return tooSmallError(store, v, stats, err)
		}
		if err != nil {
			return fmt.Errorf("hook copyup: volume %s/%s at %s: %w", v.ns, v.name, v.target, err)
		}
		vlog := log.WithFields(logrus.Fields{"volume": v.ns + "/" + v.name, "target": v.target})
		if !copied {
			vlog.Debug("copy-up: volume already filled, nothing to do")
			continue
		}
		vlog.Debugf("copy-up: %d files, %d dirs, %d symlinks, %d hard links, %d bytes; %d skipped",
			stats.Files, stats.Dirs, stats.Symlinks, stats.Hardlinks, stats.Bytes, stats.Skipped)
	}
	return nil
}

func parseCopyUpFlags(args []string) (copyUpOptions, error) {
	var opts copyUpOptions
	fs := flag.NewFlagSet("hook copyup", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // the error is returned and printed once by main
	fs.StringVar(&opts.root, "root", "", "volume store root (required)")
	fs.Int64Var(&opts.limits.MaxBytes, "max-bytes", 0, "most bytes to copy into one volume (0: no limit)")
	fs.Int64Var(&opts.limits.MaxFiles, "max-files", 0, "most entries to copy into one volume (0: no limit)")
	fs.StringVar(&opts.logLevel, "log-level", "info", "log level (debug shows a summary per volume)")
	fs.Func("volume", "NAMESPACE/NAME=/target to fill (repeatable)", func(s string) error {
		v, err := parseCopyUpVolume(s)
		if err != nil {
			return err
		}
		opts.volumes = append(opts.volumes, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
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
	case len(opts.volumes) == 0:
		return opts, errors.New("no --volume given")
	}
	return opts, nil
}

// parseCopyUpVolume parses NAMESPACE/NAME=/target. Names never hold "/" or
// "=", so the first of each separates the parts and the target may hold any.
func parseCopyUpVolume(s string) (copyUpVolume, error) {
	ref, target, ok := strings.Cut(s, "=")
	if !ok {
		return copyUpVolume{}, fmt.Errorf("%q: want NAMESPACE/NAME=/target", s)
	}
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		return copyUpVolume{}, fmt.Errorf("%q: want NAMESPACE/NAME=/target", s)
	}
	if err := volumes.ValidateNamespace(ns); err != nil {
		return copyUpVolume{}, fmt.Errorf("%q: %w", s, err)
	}
	if err := volumes.ValidateName(name); err != nil {
		return copyUpVolume{}, fmt.Errorf("%q: %w", s, err)
	}
	// The target is resolved inside the rootfs as the runtime resolves the
	// mount's destination, symlinks first, so it is checked but not cleaned.
	if !filepath.IsAbs(target) || strings.ContainsRune(target, 0) {
		return copyUpVolume{}, fmt.Errorf("%q: target %q is not an absolute path", s, target)
	}
	return copyUpVolume{ns: ns, name: name, target: target}, nil
}

// readHookState reads the OCI state document a runtime gives its hooks.
func readHookState(r io.Reader) (*specs.State, error) {
	if f, ok := r.(*os.File); ok && isTerminal(f) {
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

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// tooSmallError says that the image's content did not fit a sized volume:
// which volume, its size and how far the copy got before the kernel said no.
func tooSmallError(store *volumes.Store, v copyUpVolume, stats copyup.Stats, err error) error {
	size := "its size"
	if vol, gerr := store.Get(v.ns, v.name); gerr == nil && vol.Limit > 0 {
		size = "its size " + volumes.FormatBytes(vol.Limit)
	}
	return fmt.Errorf("hook copyup: volume %s/%s at %s: the image's content does not fit %s: "+
		"copy-up stopped after %d files (%s), %d directories and %d symlinks, and was undone: %w",
		v.ns, v.name, v.target, size, stats.Files, volumes.FormatBytes(stats.Bytes), stats.Dirs, stats.Symlinks, err)
}
