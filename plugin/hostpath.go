package plugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
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
// are trusted); below that entry it is opened one component at a time with
// openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, so no
// symlink a pod planted is followed and the path of the object is known
// exactly. That path must be neither / nor cover, or lie below, a denied
// path; and, whatever path reached them, no component may be a denied
// object, the object may hold none, and no component may be on another
// mount than the entry unless it is an entry itself (see walkBindSource),
// and no mount below the object may show a denied object (checkMountsBelow;
// checkPins checks that again on the pin, which a rename cannot fool).
// The object must be a directory or a regular file. The caller pins the
// object: runc never resolves src itself, so swapping a component for a
// symlink after this check changes nothing.
func openBindSource(cfg *config.Config, denied *denySet, src string) (*os.File, error) {
	dir, rel, ok := allowedDirFor(cfg.BindMounts.AllowedHostPaths, src)
	if !ok {
		return nil, fmt.Errorf("bind source %q is outside bindMounts.allowedHostPaths", src)
	}
	real := filepath.Join(dir, rel)
	if real == "/" {
		return nil, fmt.Errorf("bind source %q resolves to /", src)
	}
	for _, d := range denied.paths {
		if within(real, d) || within(d, real) {
			return nil, fmt.Errorf("bind source %q (at %q) covers %s, which is never allowed", src, real, d)
		}
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("allowed host path %q: %w", dir, err)
	}
	f, err := walkBindSource(os.NewFile(uintptr(fd), dir), cfg.BindMounts.AllowedHostPaths, denied, src, dir, rel)
	if err != nil {
		return nil, err
	}
	if afterBindWalk != nil {
		afterBindWalk(real)
	}
	// A first look, by the object's path, refuses a plain case before the
	// request claims or makes anything; the path may name another object
	// by now, so checkPins checks the pinned tree again.
	if err := denied.readMounts(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bind source %q: reading the mount table: %w", src, err)
	}
	if err := checkMountsBelow(f, denied, denied.mounts, src, real, real, false); err != nil {
		f.Close()
		return nil, err
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

// walkBindSource opens rel below the allowed entry open at root (dir, where
// it is), one component at a time, and checks the identity and the mount of
// each component it reaches, the entry included: checking the descriptors
// that lead to the object, not paths, is what a bind mount or a rename
// cannot fool. It takes root and closes it.
func walkBindSource(root *os.File, allowed []string, denied *denySet, src, dir, rel string) (*os.File, error) {
	cur, at := root, dir
	prev, mnt, err := checkIdentity(cur, denied, src, at, rel == ".")
	if err != nil {
		cur.Close()
		return nil, err
	}
	if rel == "." {
		return cur, nil
	}
	for _, name := range strings.Split(rel, "/") {
		next, err := volumes.OpenPathBeneath(cur, name)
		cur.Close()
		switch {
		case errors.Is(err, unix.ELOOP):
			return nil, fmt.Errorf("bind source %q has a symlink on its path: bind sources follow no symlink, give the real path", src)
		case errors.Is(err, unix.ENOENT):
			return nil, fmt.Errorf("bind source %q: no such file or directory", src)
		case err != nil:
			return nil, fmt.Errorf("bind source %q: %w", src, err)
		}
		cur, at = next, filepath.Join(at, name)
		id, m, err := checkIdentity(cur, denied, src, at, at == filepath.Join(dir, rel))
		// Without mount IDs (before Linux 5.8) a change of device is taken
		// for a mount, which also refuses a btrfs subvolume.
		if err == nil && (m != mnt || m == 0 && id.Dev != prev.Dev) && !isAllowedEntry(allowed, at) {
			err = fmt.Errorf("bind source %q crosses into another mount at %q, which is not itself in bindMounts.allowedHostPaths", src, at)
		}
		if err != nil {
			cur.Close()
			return nil, err
		}
		prev, mnt = id, m
	}
	return cur, nil
}

// checkIdentity refuses the component open at f (at, on the way to src)
// when it is a denied object, and, when it is the object itself (last),
// when it holds one. It returns the component's identity and mount.
func checkIdentity(f *os.File, denied *denySet, src, at string, last bool) (fsx.ID, uint64, error) {
	id, mnt, err := fsx.Identity(int(f.Fd()))
	if err != nil {
		return id, mnt, fmt.Errorf("bind source %q: %w", src, err)
	}
	if d, ok := denied.is[id]; ok {
		return id, mnt, fmt.Errorf("bind source %q reaches %s at %q, which is never allowed", src, d, at)
	}
	if d, ok := denied.holds[id]; ok && last {
		return id, mnt, fmt.Errorf("bind source %q (at %q) holds %s, which is never allowed", src, at, d)
	}
	return id, mnt, nil
}

// afterBindWalk, when set (by tests), runs between the walk to a bind
// source and the look at the mounts below it, with the source's path: the
// moment a rename of the source lands in the race checkPins closes.
var afterBindWalk func(real string)

// checkMountsBelow refuses the source open at f (src) when a mount below
// it, in mounts (a mount table where the tree open at f is at path at, which
// errors call shown), shows a denied object: the bind is recursive, so the pod would get that
// mount too. Mounts at at are skipped, except, with stacked set, those
// after the first, the tree's own: for a pin, what was stacked on the
// object since the walk, which the pin carried along. Each mount point is
// reached from f without following a symlink, so what is checked is what
// the bind carries.
func checkMountsBelow(f *os.File, denied *denySet, mounts []fsx.Mount, src, at, shown string, stacked bool) error {
	own := false
	for _, mnt := range mounts {
		mp := mnt.Point
		if !within(mp, at) || mp == at && (!stacked || !own) {
			own = own || mp == at
			continue
		}
		rel, _ := filepath.Rel(at, mp)
		where := filepath.Join(shown, rel)
		for _, p := range denied.inside {
			if mnt.Dev == p.dev && within(mnt.Root, p.path) {
				return fmt.Errorf("bind source %q has a mount at %q that shows %s or a part of it, which is never allowed", src, where, p.name)
			}
		}
		m, err := volumes.OpenPathBeneath(f, rel)
		if err != nil {
			return fmt.Errorf("bind source %q has a mount at %q that cannot be checked: %w", src, where, err)
		}
		id, _, err := fsx.Identity(int(m.Fd()))
		m.Close()
		if err != nil {
			return fmt.Errorf("bind source %q: %w", src, err)
		}
		d, ok := denied.is[id]
		if !ok {
			d, ok = denied.holds[id]
		}
		if ok {
			return fmt.Errorf("bind source %q has a mount at %q that shows %s, which is never allowed", src, where, d)
		}
	}
	return nil
}

// isAllowedEntry reports whether path is an entry of allowed, as written or
// with its symlinks resolved.
func isAllowedEntry(allowed []string, path string) bool {
	for _, a := range allowed {
		if a == path {
			return true
		}
		if r, err := filepath.EvalSymlinks(a); err == nil && r == path {
			return true
		}
	}
	return false
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

// denySet is what no bind mount may show a pod, by path and by identity.
type denySet struct {
	// paths are the denied paths, each as configured and with its
	// symlinks resolved.
	paths []string
	// is maps the identity of each denied object that exists to its path:
	// a bind mount or a hard link that shows it elsewhere is refused too.
	is map[fsx.ID]string
	// holds maps the identity of each directory above a denied object
	// to that object's path: binding such a directory hands the object
	// over, and with readWrite lets a pod write beside it.
	holds map[fsx.ID]string
	// real are the denied objects that exist, by path without symlinks.
	real map[string]string
	// mounts is the mount table and inside the denied objects as the file
	// systems see them, read once for all the sources of a request.
	mounts    []fsx.Mount
	inside    []fsPlace
	mountsErr error
	read      bool
}

// fsPlace is a denied object as its file system sees it: a mount below a
// bind source that shows it, or anything below it, hands it to the pod.
type fsPlace struct {
	dev, path, name string
}

// readMounts reads the mount table the first time and places the denied
// objects on their file systems.
func (d *denySet) readMounts() error {
	if d.read {
		return d.mountsErr
	}
	d.read = true
	d.mounts, d.mountsErr = fsx.Mounts()
	for r, name := range d.real {
		var on *fsx.Mount
		for i := range d.mounts {
			// The last of the longest wins: a mount on top of another
			// comes after it.
			if m := &d.mounts[i]; within(r, m.Point) && (on == nil || len(m.Point) >= len(on.Point)) {
				on = m
			}
		}
		if on != nil {
			rel, _ := filepath.Rel(on.Point, r)
			d.inside = append(d.inside, fsPlace{dev: on.Dev, path: filepath.Join(on.Root, rel), name: name})
		}
	}
	return d.mountsErr
}

// selfExe is the plugin's own binary, which runs as host root.
const selfExe = "/proc/self/exe"

// newDenySet returns what no bind mount may show: the store, containerd's
// root, the kernel's and the runtime's directories, the hook that runc runs
// as host root (hookPath) and the plugin's own binary. A denied path that
// does not exist is denied by path only.
func newDenySet(cfg *config.Config) *denySet {
	d := &denySet{is: map[fsx.ID]string{}, holds: map[fsx.ID]string{}, real: map[string]string{}}
	given := append([]string{cfg.Root, cfg.ContainerdRoot, cfg.HookPath}, deniedHostPaths...)
	if exe, err := os.Readlink(selfExe); err == nil && filepath.IsAbs(exe) {
		given = append(given, filepath.Clean(exe))
	}
	for _, p := range given {
		d.paths = append(d.paths, p)
		r, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue
		}
		if r != p {
			d.paths = append(d.paths, r)
		}
		d.deny(r, p)
	}
	// The running binary, even when its path is gone or was replaced.
	if id, err := fsx.PathIdentity(selfExe); err == nil {
		if _, ok := d.is[id]; !ok {
			d.is[id] = "the plugin's own binary"
		}
	}
	return d
}

// deny adds the object at real, a path without symlinks, and the directories
// above it; name is how errors call the object.
func (d *denySet) deny(real, name string) {
	id, err := fsx.PathIdentity(real)
	if err != nil {
		return
	}
	d.is[id] = name
	d.real[real] = name
	for dir := filepath.Dir(real); ; dir = filepath.Dir(dir) {
		if id, err := fsx.PathIdentity(dir); err == nil {
			if _, ok := d.holds[id]; !ok {
				d.holds[id] = name
			}
		}
		if dir == "/" {
			return
		}
	}
}

// within reports whether p is dir or below it; both are clean absolute paths.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// openBindSources opens and checks the source of every bind mount of the
// plan (see openBindSource), by mount index; the denied paths are resolved
// once for them all and returned for checkPins (nil without bind mounts).
// On error nothing stays open; otherwise the caller closes them with
// closeAll.
func openBindSources(cfg *config.Config, key string, plan *Plan) (map[int]*os.File, *denySet, error) {
	srcs := map[int]*os.File{}
	var denied *denySet
	for i, m := range plan.Mounts {
		if m.Kind != KindBind {
			continue
		}
		if denied == nil {
			denied = newDenySet(cfg)
		}
		f, err := openBindSource(cfg, denied, m.Source)
		if err != nil {
			closeAll(srcs)
			return nil, nil, fmt.Errorf("%w %s: item %s: %w", ErrInvalid, key, m.Item, err)
		}
		srcs[i] = f
	}
	return srcs, denied, nil
}

func closeAll(files map[int]*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// pinHostPaths pins the opened bind sources srcs of the plan's mounts for
// container id, checks the pinned trees (checkPins), and returns the pins'
// paths by mount index. On error the caller removes the pins.
func pinHostPaths(store *volumes.Store, id, key string, plan *Plan, srcs map[int]*os.File, denied *denySet) (map[int]string, error) {
	pins := map[int]string{}
	for i, f := range srcs {
		m := plan.Mounts[i]
		pin, err := store.Pins().HostPath(id, i, f)
		if err != nil {
			return nil, fmt.Errorf("item %s: pinning bind source %q: %w", m.Item, m.Source, err)
		}
		pins[i] = pin
	}
	if len(pins) == 0 {
		return pins, nil
	}
	if err := checkPins(denied, key, plan, pins); err != nil {
		return nil, err
	}
	return pins, nil
}

// checkPins checks the mounts below each pin of a bind source as
// checkMountsBelow does. openBindSource looked below the source by its
// path, and mountinfo shows a mount where its mount point is now: a pod
// that can rename the source's directory may move it away between the walk
// and that look and leave an empty decoy at its name, and the pin, a
// recursive clone of the object the walk opened, would then carry mounts
// that were never checked. A pin is private and in the store, where no pod
// renames anything, so what is below it now is what runc will mount.
func checkPins(denied *denySet, key string, plan *Plan, pins map[int]string) error {
	mounts, err := fsx.Mounts()
	if err != nil {
		return fmt.Errorf("reading the mount table: %w", err)
	}
	for i, pin := range pins {
		m := plan.Mounts[i]
		if err := checkPin(denied, mounts, m.Source, pin); err != nil {
			return fmt.Errorf("%w %s: item %s: %w", ErrInvalid, key, m.Item, err)
		}
	}
	return nil
}

// checkPin checks the pin at pin of bind source src: the object on top of
// it, and the mounts below it in mounts.
func checkPin(denied *denySet, mounts []fsx.Mount, src, pin string) error {
	// The store's path is the administrator's; mountinfo shows it without
	// symlinks.
	at, err := filepath.EvalSymlinks(pin)
	if err != nil {
		return fmt.Errorf("bind source %q: its pin: %w", src, err)
	}
	fd, err := unix.Open(at, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bind source %q: its pin: %w", src, err)
	}
	f := os.NewFile(uintptr(fd), at)
	defer f.Close()
	if _, _, err := checkIdentity(f, denied, src, at, true); err != nil {
		return err
	}
	// Errors name the mount below the source the pod asked for, not the pin.
	return checkMountsBelow(f, denied, mounts, src, at, src, true)
}
