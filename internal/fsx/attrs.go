package fsx

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// SetTimes gives the file open at fd the access and modification times of
// st, through its /proc/self/fd magic link, which needs no parent directory.
func SetTimes(fd int, st *unix.Stat_t) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), []unix.Timespec{st.Atim, st.Mtim}, 0)
}

// CopyOwnerModeXattrs gives the file open at dst the owner, mode and extended
// attributes of the one open at src, whose stat is st. The mode is set after
// the owner because chown clears the setuid and setgid bits, the extended
// attributes after both because chown drops file capabilities. Attributes
// the destination does not support are left out.
func CopyOwnerModeXattrs(src, dst int, st *unix.Stat_t) error {
	if err := unix.Fchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(dst, st.Mode&0o7777); err != nil {
		return err
	}
	size, err := unix.Flistxattr(src, nil)
	if errors.Is(err, unix.ENOTSUP) || err == nil && size == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	names := make([]byte, size)
	n, err := unix.Flistxattr(src, names)
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, nb := range bytes.Split(names[:n], []byte{0}) {
		if len(nb) == 0 {
			continue
		}
		attr := string(nb)
		vsize, err := unix.Fgetxattr(src, attr, nil)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get xattr %q: %w", attr, err)
		}
		val := make([]byte, vsize)
		vn, err := unix.Fgetxattr(src, attr, val)
		if err != nil {
			return fmt.Errorf("get xattr %q: %w", attr, err)
		}
		if err := unix.Fsetxattr(dst, attr, val[:vn], 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("set xattr %q: %w", attr, err)
		}
	}
	return nil
}
