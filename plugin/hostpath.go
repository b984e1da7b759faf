package plugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
	"golang.org/x/sys/unix"
)

// deniedHostPaths are never bind-mounted, whatever the allowlist says: the
// kernel's filesystems, the host's configuration and the container runtime's
// state and sockets.
var deniedHostPaths = []string{
	"/proc", "/sys", "/dev", "/etc", "/boot",
	"/run/containerd", "/var/run/containerd", "/run/nri", "/var/run/nri",
	"/var/lib/kubelet", "/run/crio", "/var/lib/containers",
}

// openBindSource opens the host path src of a bind mount, which the
// annotation gave as a clean absolute path, and returns an O_PATH descriptor
// of it. src must be below an entry of bindMounts.allowedHostPaths, as the
// entry is written or with its symlinks resolved (the administrator's paths
// are trusted); below that entry it is opened with openat2
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, so no symlink a
// pod planted is followed and the path of the object is known exactly. That
// path must be neither / nor cover, or lie below, a denied path; the object
// must be a directory or a regular file. The caller pins the object: runc
// never resolves src itself, so swapping a component for a symlink after
// this check changes nothing.
func openBindSource(cfg *config.Config, denied []string, src string) (*os.File, error) {
	dir, rel, ok := allowedDirFor(cfg.BindMounts.AllowedHostPaths, src)
	if !ok {
		return nil, fmt.Errorf("bind source %q is outside bindMounts.allowedHostPaths", src)
	}
	real := filepath.Join(dir, rel)
	if real == "/" {
		return nil, fmt.Errorf("bind source %q resolves to /", src)
	}
	for _, d := range denied {
		if within(real, d) || within(d, real) {
			return nil, fmt.Errorf("bind source %q (at %q) covers %s, which is never allowed", src, real, d)
		}
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("allowed host path %q: %w", dir, err)
	}
	root := os.NewFile(uintptr(fd), dir)
	defer root.Close()
	f, err := volumes.OpenPathBeneath(root, rel)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("bind source %q has a symlink on its path: bind sources follow no symlink, give the real path", src)
	case errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("bind source %q: no such file or directory", src)
	case err != nil:
		return nil, fmt.Errorf("bind source %q: %w", src, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind source %q: %w", src, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFDIR && t != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("bind source %q is neither a directory nor a regular file", src)
	}
	return f, nil
}

// allowedDirFor finds the allowlist entry that covers src and returns the
// entry with its symlinks resolved and the rest of src below it.
func allowedDirFor(allowed []string, src string) (dir, rel string, ok bool) {
	for _, a := range allowed {
		resolved, err := filepath.EvalSymlinks(a)
		if err != nil {
			continue
		}
		for _, base := range []string{a, resolved} {
			if within(src, base) {
				rel, err := filepath.Rel(base, src)
				if err == nil {
					return resolved, rel, true
				}
			}
		}
	}
	return "", "", false
}

// deniedPaths returns the paths no bind mount may cover, each as configured
// and with its symlinks resolved: a store or a kubelet directory on a bigger
// disk linked in must be refused under its real path too.
func deniedPaths(cfg *config.Config) []string {
	denied := append([]string{cfg.Root, cfg.ContainerdRoot}, deniedHostPaths...)
	for _, d := range denied {
		if r, err := filepath.EvalSymlinks(d); err == nil && r != d {
			denied = append(denied, r)
		}
	}
	return denied
}

// within reports whether p is dir or below it; both are clean absolute paths.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// openBindSources opens and checks the source of every bind mount of the
// plan (see openBindSource), by mount index; the denied paths are resolved
// once for them all. On error nothing stays open; otherwise the caller
// closes them with closeAll.
func openBindSources(cfg *config.Config, key string, plan *Plan) (map[int]*os.File, error) {
	srcs := map[int]*os.File{}
	var denied []string
	for i, m := range plan.Mounts {
		if m.Kind != KindBind {
			continue
		}
		if denied == nil {
			denied = deniedPaths(cfg)
		}
		f, err := openBindSource(cfg, denied, m.Source)
		if err != nil {
			closeAll(srcs)
			return nil, fmt.Errorf("%w %s: item %s: %w", ErrInvalid, key, m.Item, err)
		}
		srcs[i] = f
	}
	return srcs, nil
}

func closeAll(files map[int]*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// pinHostPaths pins the opened bind sources srcs of the plan's mounts for
// container id, and returns the pins' paths by mount index.
func pinHostPaths(store *volumes.Store, id string, plan *Plan, srcs map[int]*os.File) (map[int]string, error) {
	pins := map[int]string{}
	for i, f := range srcs {
		m := plan.Mounts[i]
		pin, err := store.PinHostPath(id, i, f)
		if err != nil {
			return nil, fmt.Errorf("item %s: pinning bind source %q: %w", m.Item, m.Source, err)
		}
		pins[i] = pin
	}
	return pins, nil
}
