package sizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/bytesize"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// The image backend: the volume's directory holds disk.img, a sparse file
// with an ext4 file system made by e2fsprogs' mkfs.ext4, attached to a loop
// device (loop-control and LOOP_CONFIGURE, with autoclear, so unmounting
// detaches it) and mounted at _data. Writes past the size get ENOSPC, and df
// in a container shows the size.
const (
	// mkfsTimeout bounds mkfs.ext4 and resize2fs; lazy initialisation
	// makes them take about 0.1 s for 10 GiB.
	mkfsTimeout = 30 * time.Second
)

// Image is the image backend.
type Image struct {
	// Inodes is about the inode count of the file system Prepare makes;
	// 0: mkfs.ext4's default.
	Inodes int64
}

// MaxInodes is the most inodes ext4 holds.
const MaxInodes = 1<<32 - 1

// Prepare makes _data and disk.img. mkfs.ext4 reserves no blocks for root
// and puts off zeroing inode tables and the journal to the kernel. The file
// system is made larger than size by its own overhead (journal, inode
// tables), so that df shows exactly size, rounded up to a whole block: the
// size is what data can use. The overhead grows with the file system, so
// its block count is found in a few tries.
func (z Image) Prepare(volFd int, size int64) error {
	if err := MkdirData(volFd); err != nil {
		return err
	}
	fd, err := unix.Openat(volFd, ImageFile, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: ImageFile, Err: err}
	}
	f := os.NewFile(uintptr(fd), ImageFile)
	defer f.Close()
	// The first try picks the block size for size, which the others keep.
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("size %s: %w", ImageFile, err)
	}
	if err := mkfsExt4(f, 0, 0, z.Inodes); err != nil {
		return err
	}
	sb, err := readExt4Super(f)
	if err != nil {
		return err
	}
	bs := sb.blockSize
	want := (size + bs - 1) / bs
	best := int64(0) // the fewest blocks seen that leave at least want
	blocks := want + sb.overhead
	for try := 0; try < 8; try++ {
		sb, err = formatBlocks(f, bs, blocks, z.Inodes)
		if err != nil {
			return err
		}
		usable := sb.blocks - sb.overhead
		if usable == want {
			return nil
		}
		if usable > want && (best == 0 || sb.blocks < best) {
			best = sb.blocks
		}
		blocks += want - usable
	}
	if best == 0 {
		return fmt.Errorf("mkfs.ext4 leaves less than %s usable", bytesize.Format(size))
	}
	// No count gave exactly size (a group boundary between two tries):
	// the nearest above it.
	_, err = formatBlocks(f, bs, best, z.Inodes)
	return err
}

// formatBlocks makes f a file system of blocks blocks of bs bytes, with
// about inodes inodes when that is not 0.
func formatBlocks(f *os.File, bs, blocks, inodes int64) (ext4Super, error) {
	if err := f.Truncate(blocks * bs); err != nil {
		return ext4Super{}, fmt.Errorf("size %s: %w", ImageFile, err)
	}
	if err := mkfsExt4(f, bs, blocks, inodes); err != nil {
		return ext4Super{}, err
	}
	return readExt4Super(f)
}

// mkfsExt4 formats the file f through its descriptor, so no path is looked
// up again: all of it, or, with a block size, blocks blocks of it; with
// inodes, about that many inodes (-N), whose tables count in the
// overhead that Prepare's search makes up for.
func mkfsExt4(f *os.File, bs, blocks, inodes int64) error {
	args := []string{"-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"}
	if inodes > 0 {
		args = append(args, "-N", strconv.FormatInt(inodes, 10))
	}
	if bs > 0 {
		args = append(args, "-b", strconv.FormatInt(bs, 10), "/dev/fd/3", strconv.FormatInt(blocks, 10))
	} else {
		args = append(args, "/dev/fd/3")
	}
	return runTool(f, "mkfs.ext4", args...)
}

// runTool runs an e2fsprogs tool, with f (if any) as its descriptor 3.
func runTool(f *os.File, name string, args ...string) error {
	path, err := LookTool(name)
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	if f != nil {
		cmd.ExtraFiles = []*os.File{f}
	}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.WaitDelay = mkfsTimeout
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(mkfsTimeout):
		_ = cmd.Process.Kill()
		err = fmt.Errorf("timed out after %s", mkfsTimeout)
		<-done
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// LookTool finds an e2fsprogs program on PATH or in the sbin directories,
// which a container's or a service's PATH may lack.
func LookTool(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is needed for sized volumes (install e2fsprogs): not found on PATH or in /usr/sbin, /sbin", name)
}

// ext4Super is what the store reads of an ext4 superblock.
type ext4Super struct {
	blocks, free, overhead, blockSize int64
	// clean: unmounted cleanly and without errors recorded.
	clean bool
}

// readExt4Super reads the superblock of the ext4 file system in f. The
// counts are exact when the file system is not mounted; overhead (journal,
// inode tables, bitmaps) is set by mkfs.ext4 1.47 and by kernels since 5.18.
func readExt4Super(f *os.File) (ext4Super, error) {
	var b [1024]byte
	if _, err := f.ReadAt(b[:], 1024); err != nil {
		return ext4Super{}, fmt.Errorf("read the ext4 superblock: %w", err)
	}
	le := binary.LittleEndian
	if le.Uint16(b[0x38:]) != 0xEF53 {
		return ext4Super{}, errors.New("no ext4 file system in " + ImageFile)
	}
	logBS := le.Uint32(b[0x18:])
	if logBS > 6 {
		return ext4Super{}, fmt.Errorf("ext4 superblock: bad block size 2^%d KiB", logBS)
	}
	sb := ext4Super{
		blocks:    int64(le.Uint32(b[0x04:])),
		free:      int64(le.Uint32(b[0x0C:])),
		overhead:  int64(le.Uint32(b[0x248:])),
		blockSize: 1024 << logBS,
		clean:     le.Uint16(b[0x3A:])&3 == 1, // EXT2_VALID_FS, not EXT2_ERROR_FS
	}
	const incompat64bit = 0x80
	if le.Uint32(b[0x60:])&incompat64bit != 0 {
		sb.blocks |= int64(le.Uint32(b[0x150:])) << 32
		sb.free |= int64(le.Uint32(b[0x158:])) << 32
	}
	return sb, nil
}

// Activate attaches disk.img to a loop device, unless one holds it already
// (a mount of it survives elsewhere), and mounts it at _data nosuid,nodev.
// The mount target is named through a descriptor, so no symlink is followed.
func (Image) Activate(volFd int, volPath string) error {
	if IsDataMounted(volFd) {
		return nil
	}
	img, err := OpenImage(volFd)
	if err != nil {
		return err
	}
	defer img.Close()
	dev, loopFd, err := LoopFor(img)
	if err != nil {
		return err
	}
	// With autoclear, closing the last descriptor of an unmounted device
	// detaches it: a failed mount, or a crash before it, leaves nothing.
	defer unix.Close(loopFd)
	target, err := fsx.OpenBeneath(volFd, DataDir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := unix.Mount(dev, "/proc/self/fd/"+strconv.Itoa(target), "ext4", unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("mount %s (%s) at %s: %w", dev, ImageFile, filepath.Join(volPath, DataDir), err)
	}
	if err := removeFreshLostFound(volFd); err != nil {
		return errors.Join(err, Image{}.Deactivate(volFd, volPath))
	}
	return nil
}

// removeFreshLostFound removes the lost+found that mkfs.ext4 makes while it
// is the only entry and empty: a new volume must look empty, for copy-up.
// e2fsck makes it again when it needs one.
func removeFreshLostFound(volFd int) error {
	fd, err := fsx.OpenDir(volFd, DataDir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	names, err := fsx.ReadDirNames(fd)
	if err != nil || len(names) != 1 || names[0] != "lost+found" {
		return err
	}
	if err := unix.Unlinkat(fd, "lost+found", unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOTEMPTY) {
		return &os.PathError{Op: "unlinkat", Path: "lost+found", Err: err}
	}
	return nil
}

// OpenImage opens the disk image of the volume directory open at volFd, read
// and write, after checking it is a regular file.
func OpenImage(volFd int) (*os.File, error) {
	fd, err := unix.Openat(volFd, ImageFile, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBroken, &os.PathError{Op: "openat", Path: ImageFile, Err: err})
	}
	f := os.NewFile(uintptr(fd), ImageFile)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBroken, ImageFile)
	}
	return f, nil
}

// Deactivate unmounts _data, lazily; the loop device's autoclear detaches
// it once no mount holds it.
func (Image) Deactivate(volFd int, volPath string) error {
	for try := 0; try < 8 && IsDataMounted(volFd); try++ {
		target := filepath.Join(volPath, DataDir)
		// Detached, not waited for: a plain unmount writes back every
		// dirty page first, seconds after a big write, and this runs
		// inside NRI requests (Release, RemovePodSandbox) under the
		// store's lock. The loop device's autoclear detaches it once the
		// file system is written back and nothing holds it.
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
		if errors.Is(err, unix.EBUSY) {
			return &BusyError{Target: target}
		}
		if err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	return nil
}

// Usage is statfs of the mounted file system, or, when it is not mounted,
// the counts its superblock keeps: O(1) either way.
func (Image) Usage(volFd int) (int64, error) {
	if IsDataMounted(volFd) {
		return statfsUsage(volFd)
	}
	img, err := OpenImage(volFd)
	if err != nil {
		return 0, err
	}
	defer img.Close()
	sb, err := readExt4Super(img)
	if err != nil {
		return 0, err
	}
	return max(sb.blocks-sb.free-sb.overhead, 0) * sb.blockSize, nil
}

func statfsUsage(volFd int) (int64, error) {
	var st unix.Statfs_t
	if err := statfsData(volFd, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize, nil
}

// Grow extends disk.img and the file system in it until the file system
// shows size, as Prepare does. A mounted file system grows online: the loop
// device takes the new size (LOOP_SET_CAPACITY) and resize2fs asks the
// kernel, which needs CAP_SYS_RESOURCE. An unmounted one is grown by
// resize2fs in the file.
func (Image) Grow(volFd int, volPath string, size int64) error {
	img, err := OpenImage(volFd)
	if err != nil {
		return err
	}
	defer img.Close()
	online := IsDataMounted(volFd)
	for try := 0; try < 4; try++ {
		shown, bs, err := shownSize(volFd, img, online)
		if err != nil {
			return err
		}
		if shown >= size {
			return nil
		}
		fi, err := img.Stat()
		if err != nil {
			return err
		}
		short := size - shown
		newSize := (fi.Size() + short + short/32 + bs - 1) / bs * bs
		if err := img.Truncate(newSize); err != nil {
			return fmt.Errorf("extend %s: %w", ImageFile, err)
		}
		if online {
			err = growOnline(img)
		} else {
			err = growOffline(img)
		}
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("resize2fs leaves less than %s usable", bytesize.Format(size))
}

// shownSize is the size the file system shows (df's), and its block size.
func shownSize(volFd int, img *os.File, online bool) (int64, int64, error) {
	if online {
		var st unix.Statfs_t
		if err := statfsData(volFd, &st); err != nil {
			return 0, 0, err
		}
		return int64(st.Blocks) * st.Bsize, st.Bsize, nil
	}
	sb, err := readExt4Super(img)
	if err != nil {
		return 0, 0, err
	}
	return (sb.blocks - sb.overhead) * sb.blockSize, sb.blockSize, nil
}

// growOffline grows the unmounted file system in img to the file's size.
// resize2fs wants a file system checked since it was last mounted; one this
// store unmounted cleanly needs no check (and a check would bring lost+found
// back).
func growOffline(img *os.File) error {
	sb, err := readExt4Super(img)
	if err != nil {
		return err
	}
	if !sb.clean {
		return fmt.Errorf("the file system in %s was not unmounted cleanly; run e2fsck -f on it first", ImageFile)
	}
	return runTool(img, "resize2fs", "-f", "/dev/fd/3")
}

// growOnline has the loop device that holds img take the file's new size and
// grows the mounted file system on it.
func growOnline(img *os.File) error {
	dev, loopFd, err := LoopFor(img)
	if err != nil {
		return err
	}
	defer unix.Close(loopFd)
	if err := unix.IoctlSetInt(loopFd, unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	// resize2fs finds the mount by the device's name and grows online.
	if err := runTool(nil, "resize2fs", dev); err != nil {
		return fmt.Errorf("growing the mounted file system (the kernel wants CAP_SYS_RESOURCE): %w", err)
	}
	return nil
}
