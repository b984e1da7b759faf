package sizer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// LoopControl is the device that hands out free loop devices; sized volumes
// of the image backend need it.
const LoopControl = "/dev/loop-control"

// LoopFor returns a loop device, open, that holds img: the one bound to it
// already, or a free one bound now. Two mounts of one ext4 on two devices
// would corrupt it, so an existing binding always wins.
func LoopFor(img *os.File) (string, int, error) {
	return loopFor(img, 0)
}

// loopFor is LoopFor with flags added to the new device's (a read-only
// one reuses no device bound already).
func loopFor(img *os.File, flags uint32) (string, int, error) {
	// A read-only device is a clone's copy reading the image at rest (see
	// MountImageReadOnly), never one to mount the volume from.
	if dev, ok := BoundLoop(img); ok && flags == 0 && !loopReadOnly(dev) {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return dev, fd, nil
		}
	}
	ctl, err := unix.Open(LoopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, fmt.Errorf("sized volumes need loop devices: %w", &os.PathError{Op: "open", Path: LoopControl, Err: err})
	}
	defer unix.Close(ctl)
	var lastErr error
	for try := 0; try < 32; try++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", -1, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		fd, err := openLoopDevice(dev)
		if err != nil {
			return "", -1, err
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd()), Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR | flags}}
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], img.Name())
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return dev, fd, nil
		}
		unix.Close(fd)
		// Another process took the device between GET_FREE and CONFIGURE.
		if !errors.Is(err, unix.EBUSY) {
			return "", -1, fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err)
		}
		lastErr = err
	}
	return "", -1, fmt.Errorf("no free loop device: %w", lastErr)
}

// openLoopDevice opens a loop device that loop-control just made; udev or
// devtmpfs may take a moment to show its node.
func openLoopDevice(dev string) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) || try >= 50 {
			return -1, &os.PathError{Op: "open", Path: dev, Err: err}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BoundLoop finds a loop device whose backing file is img.
func BoundLoop(img *os.File) (string, bool) {
	var want unix.Stat_t
	if err := unix.Fstat(int(img.Fd()), &want); err != nil {
		return "", false
	}
	for dev, backing := range BoundLoops() {
		var st unix.Stat_t
		if unix.Stat(backing, &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			return dev, true
		}
	}
	return "", false
}

// loopReadOnly reports whether the loop device dev is read-only.
func loopReadOnly(dev string) bool {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro"))
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// BoundLoops lists the bound loop devices: device path -> backing file path.
func BoundLoops() map[string]string {
	out := map[string]string{}
	entries, err := os.ReadDir("/sys/block")
	if err != nil {
		return out
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "loop") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err != nil {
			continue
		}
		out["/dev/"+e.Name()] = strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
	}
	return out
}
