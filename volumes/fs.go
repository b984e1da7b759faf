package volumes

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// OpenPathBeneath opens rel, a clean relative path, below the directory open
// at dir as an O_PATH descriptor, following no symlink (a symlink anywhere on
// the way, the last component included, gives ELOOP) and never leaving dir.
// Whatever is renamed or swapped later, the descriptor stays on the object
// rel named when it was opened: that is what a pin mounts.
func OpenPathBeneath(dir *os.File, rel string) (*os.File, error) {
	if strings.HasPrefix(rel, "/") || slices.Contains(strings.Split(rel, "/"), "..") {
		// openat2 refuses these itself; the component walk must not try.
		return nil, &os.PathError{Op: "open", Path: rel, Err: unix.EXDEV}
	}
	fd, err := fsx.OpenBeneath(int(dir.Fd()), rel, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	st, err := fsx.Fstat(fd)
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		// The component walk without openat2 opens a last symlink itself.
		f.Close()
		return nil, &os.PathError{Op: "open", Path: rel, Err: unix.ELOOP}
	}
	return f, nil
}

// removeAllAt removes name below the directory open at parent, recursively,
// with fd-relative calls only and a bounded number of descriptors at any
// depth: a symlink is unlinked, never followed, and a directory on another
// device than dev (a mount) is refused with ErrInUse, not entered.
func removeAllAt(parent int, name string, dev uint64) error {
	return inUseIfMount(fsx.RemoveAll(parent, name, dev))
}

// removeContentsAt empties the directory open at fd, keeping the directory.
func removeContentsAt(fd int, dev uint64) error {
	return inUseIfMount(fsx.RemoveContents(fd, dev))
}

func inUseIfMount(err error) error {
	if errors.Is(err, fsx.ErrOtherFS) {
		return fmt.Errorf("%w: %w", ErrInUse, err)
	}
	return err
}

// createFileAt creates name, which must not exist, in the directory open at
// dir with data; when durable, the file and then the directory are fsynced.
// The caller makes it visible by renaming a directory that holds it.
func createFileAt(dir int, name string, data []byte, durable bool) error {
	return writeFileAt(dir, name, unix.O_CREAT|unix.O_EXCL, data, durable)
}

// fillFileAt is createFileAt for name that exists already, an empty regular
// file made ahead (see spares.go); anything else is an error. It is not
// opened with O_TRUNC: on ext4 a truncated file's data is sent to the disk
// when it is closed (auto_da_alloc), a write the caller did not ask for.
func fillFileAt(dir int, name string, data []byte, durable bool) error {
	return writeFileAt(dir, name, unix.O_NONBLOCK, data, durable)
}

func writeFileAt(dir int, name string, flags int, data []byte, durable bool) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	if flags&unix.O_CREAT == 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
			unix.Close(fd)
			if err == nil {
				err = errors.New("not an empty regular file")
			}
			return &os.PathError{Op: "open", Path: name, Err: err}
		}
	}
	// Written through the descriptor itself: an os.File would first try
	// to add it to the poller, two more syscalls on the path of requests.
	for len(data) > 0 && err == nil {
		var n int
		n, err = unix.Write(fd, data)
		if err == unix.EINTR {
			err = nil
			continue
		}
		if err == nil {
			// n is -1 on an error: only a write that succeeded moves on.
			data = data[n:]
		}
	}
	if err == nil && durable {
		err = unix.Fsync(fd)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: name, Err: err}
	}
	if !durable {
		return nil
	}
	if err := unix.Fsync(dir); err != nil {
		return &os.PathError{Op: "fsync", Path: ".", Err: err}
	}
	return nil
}

// replaceFileAt replaces name in the directory open at dir with data so that
// a reader, or a process that dies half-way, sees the old or the new content,
// never a mix: it writes a temporary file next to it (Open removes leftovers)
// and renames it over name. When durable, for state that must survive a crash
// of the node, the new content is fsynced before the rename and the directory
// after it; otherwise nothing is fsynced, for state that a restart rebuilds.
func replaceFileAt(dir int, name string, data []byte, durable bool) error {
	tmp := tmpPrefix + randomSuffix()
	if err := createFileAt(dir, tmp, data, durable); err != nil {
		unix.Unlinkat(dir, tmp, 0)
		return err
	}
	if err := unix.Renameat(dir, tmp, dir, name); err != nil {
		unix.Unlinkat(dir, tmp, 0)
		return &os.PathError{Op: "renameat", Path: name, Err: err}
	}
	if !durable {
		return nil
	}
	if err := unix.Fsync(dir); err != nil {
		return &os.PathError{Op: "fsync", Path: ".", Err: err}
	}
	return nil
}

func randomSuffix() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b[:])
}

// keepChowned gives _data, open at dataFd, back to the user that ChownRoot
// recorded in the volume.json of the volume open at volFd, if any, keeping
// mode: a copy-up into a volume an earlier container chowned (U with
// nocopy) must not hand its root to the image directory's owner.
func keepChowned(volFd, dataFd int, mode uint32) error {
	raw, err := fsx.ReadFile(volFd, metaFile, maxMetaSize)
	if err != nil {
		return fmt.Errorf("%w: no readable %s: %w", errBroken, metaFile, err)
	}
	var rec struct{ Chowned *IDs }
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("%w: bad %s: %w", errBroken, metaFile, err)
	}
	if rec.Chowned == nil {
		return nil
	}
	if err := unix.Fchown(dataFd, rec.Chowned.UID, rec.Chowned.GID); err != nil {
		return fmt.Errorf("chown %s: %w", dataDir, err)
	}
	return unix.Fchmod(dataFd, mode&0o7777)
}

// renameNoReplace renames without replacing an existing target. On a
// filesystem without RENAME_NOREPLACE it checks first; the volume's lock
// keeps other copy-ups out, and a container racing that check loses its
// entry to the copy's, as it would have without staging.
func renameNoReplace(oldDir int, oldName string, newDir int, newName string) error {
	err := unix.Renameat2(oldDir, oldName, newDir, newName, unix.RENAME_NOREPLACE)
	if !errors.Is(err, unix.EINVAL) {
		return err
	}
	exists, err := existsAt(newDir, newName)
	if err != nil {
		return err
	}
	if exists {
		return unix.EEXIST
	}
	return unix.Renameat(oldDir, oldName, newDir, newName)
}

// existsAt reports whether name exists in the directory open at dir.
func existsAt(dir int, name string) (bool, error) {
	_, err := fsx.Lstat(dir, name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// touchAt creates the empty file name in the directory open at dir, without
// a sync.
func touchAt(dir int, name string) error {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: name, Err: err}
	}
	return unix.Close(fd)
}

// createEmptyAt creates the empty file name in the directory open at dir,
// durably.
func createEmptyAt(dir int, name string) error {
	if err := touchAt(dir, name); err != nil {
		return err
	}
	return unix.Fsync(dir)
}

// ensureDirAt opens the store's own directory name below parent, making it
// if missing. Anything else found under that name (a symlink, a file) is
// unlinked, never followed: dot-names are reserved to the store.
func ensureDirAt(parent int, name string) (int, error) {
	for try := 0; ; try++ {
		err := unix.Mkdirat(parent, name, 0o700)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, &os.PathError{Op: "mkdirat", Path: name, Err: err}
		}
		fd, err := fsx.OpenDir(parent, name)
		if err == nil {
			return fd, nil
		}
		if try > 0 || !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
			return -1, err
		}
		if err := unix.Unlinkat(parent, name, 0); err != nil {
			return -1, &os.PathError{Op: "unlinkat", Path: name, Err: err}
		}
	}
}

// setRootAttrs gives the _data of the volume directory open at volFd the
// owner and mode v asks for: after the chown, which clears setgid, and
// always the mode, so the umask never decides what containers see.
func setRootAttrs(volFd int, v *Volume) error {
	uid, gid, mode := v.rootAttrs()
	if uid != 0 || gid != 0 {
		if err := unix.Fchownat(volFd, dataDir, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "fchownat", Path: dataDir, Err: err}
		}
	}
	if err := unix.Fchmodat(volFd, dataDir, mode, 0); err != nil {
		return &os.PathError{Op: "fchmodat", Path: dataDir, Err: err}
	}
	return nil
}
