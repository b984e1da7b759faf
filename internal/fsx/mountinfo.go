package fsx

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one line of /proc/self/mountinfo, as far as nri-volumes reads it.
type Mount struct {
	// Point is the mount point, unescaped.
	Point string
	// Dev is the file system's device, as "major:minor".
	Dev string
	// Root is the directory of the file system that the mount shows (not
	// / for a bind mount of a directory), unescaped.
	Root string
	// Optional are the optional fields: the propagation (shared:N,
	// master:N, ...); none for a private mount.
	Optional []string
}

// Mounts returns the mounts of this process's mount namespace in the order
// mountinfo lists them: a mount on top of another comes after it. A bind
// mount from the same file system has the same st_dev, so only the mount
// table finds every kind of mount.
func Mounts() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var found []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		m := Mount{Point: unescapeMountPath(fields[4]), Dev: fields[2], Root: unescapeMountPath(fields[3])}
		for _, o := range fields[6:] {
			if o == "-" {
				break
			}
			m.Optional = append(m.Optional, o)
		}
		found = append(found, m)
	}
	return found, sc.Err()
}

// MountPoints returns the mount points of this process's mount namespace,
// in mountinfo's order.
func MountPoints() ([]string, error) {
	mounts, err := Mounts()
	points := make([]string, len(mounts))
	for i, m := range mounts {
		points[i] = m.Point
	}
	return points, err
}

// MountsBelow returns the mount points among points that are dir or below it.
func MountsBelow(points []string, dir string) []string {
	var found []string
	for _, mp := range points {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			found = append(found, mp)
		}
	}
	return found
}

// MountsUnder returns the mount points at dir or below it, from this
// process's mount table, in its order.
func MountsUnder(dir string) ([]string, error) {
	all, err := MountPoints()
	if err != nil {
		return nil, err
	}
	return MountsBelow(all, dir), nil
}

// UnmountUnder lazily unmounts every mount at dir or below it, the latest
// first, until none is left or a few rounds did not get there (a mount
// propagated back meanwhile). It is for clean-up: tests and tools that must
// leave no mount behind.
func UnmountUnder(dir string) error {
	var errs []error
	for range 5 {
		points, err := MountsUnder(dir)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		errs = errs[:0]
		for i := len(points) - 1; i >= 0; i-- {
			err := unix.Unmount(points[i], unix.MNT_DETACH)
			if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, &os.PathError{Op: "umount", Path: points[i], Err: err})
			}
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
