package fsx

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// SetTimes gives the file open at fd the access and modification times of
// st.
func SetTimes(fd int, st *unix.Stat_t) error {
	return Futimens(fd, st.Atim, st.Mtim)
}

// SetOwnerModeTimes gives the file open at fd the owner, mode and times of
// st, in that order: chown clears the setuid and setgid bits. It puts a
// directory back as it was after a fill that failed.
func SetOwnerModeTimes(fd int, st *unix.Stat_t) error {
	if err := unix.Fchown(fd, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, st.Mode&0o7777); err != nil {
		return err
	}
	return SetTimes(fd, st)
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
	xattrs, err := Xattrs(src)
	if err != nil {
		return err
	}
	for attr, v := range xattrs {
		if err := unix.Fsetxattr(dst, attr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("set xattr %q: %w", attr, err)
		}
	}
	return nil
}

// Xattrs reads the extended attributes of the file open at fd: none on a
// file system without them.
func Xattrs(fd int) (map[string]string, error) {
	size, err := unix.Flistxattr(fd, nil)
	if err != nil || size == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list xattrs: %w", err)
		}
		return nil, nil
	}
	buf := make([]byte, size)
	size, err = unix.Flistxattr(fd, buf)
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	out := map[string]string{}
	for _, k := range strings.Split(string(buf[:size]), "\x00") {
		if k == "" {
			continue
		}
		n, err := unix.Fgetxattr(fd, k, nil)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %q: %w", k, err)
		}
		v := make([]byte, n)
		n, err = unix.Fgetxattr(fd, k, v)
		if err != nil {
			return nil, fmt.Errorf("get xattr %q: %w", k, err)
		}
		out[k] = string(v[:n])
	}
	return out, nil
}
