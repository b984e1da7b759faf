package sizer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// MountLoop mounts the ext4 file system on the loop device dev at target,
// nosuid, nodev and noexec: a second view of a volume's file system that
// the store reads (an export) or thaws, never one a container gets. The
// error is mount(2)'s, for the caller to say what it mounted for.
func MountLoop(dev, target string) error {
	return unix.Mount(dev, target, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// MountImage attaches the disk image of the snapshot directory open at volFd
// to a loop device and mounts it at target, as MountLoop does. With
// autoclear, the device goes with the last unmount, or now if the mount
// fails.
func MountImage(volFd int, target string) error {
	img, err := OpenImage(volFd)
	if err != nil {
		return err
	}
	defer img.Close()
	dev, loopFd, err := LoopFor(img)
	if err != nil {
		return err
	}
	defer unix.Close(loopFd)
	if err := MountLoop(dev, target); err != nil {
		return fmt.Errorf("mount the snapshot's %s (%s): %w", ImageFile, dev, err)
	}
	return nil
}

// MountImageReadOnly attaches the disk image of the directory open at
// volFd to a read-only loop device of its own and mounts it read-only at
// target, nosuid, nodev and noexec: the image is not changed at all. An
// image whose journal needs replaying is refused by the kernel; a frozen
// snapshot's and an image at rest never need it.
func MountImageReadOnly(volFd int, target string) error {
	fd, err := unix.Openat(volFd, ImageFile, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: ImageFile, Err: err}
	}
	img := os.NewFile(uintptr(fd), ImageFile)
	defer img.Close()
	dev, loopFd, err := loopFor(img, unix.LO_FLAGS_READ_ONLY)
	if err != nil {
		return err
	}
	defer unix.Close(loopFd)
	err = unix.Mount(dev, target, "ext4", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil {
		return fmt.Errorf("mount %s (%s) read-only: %w", ImageFile, dev, err)
	}
	return nil
}

// Detach unmounts target lazily: it goes once the last reader lets go.
func Detach(target string) {
	_ = unix.Unmount(target, unix.MNT_DETACH)
}

// Unmount unmounts a temporary mount at path: at once when nothing holds
// it, else detached.
func Unmount(path string) {
	if err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
		_ = unix.Unmount(path, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH)
	}
}
