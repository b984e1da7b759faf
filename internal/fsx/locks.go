package fsx

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FileID names an inode: its device and inode numbers.
type FileID struct{ Dev, Ino uint64 }

// Flocked returns the inodes on which a process holds a flock(2) lock now,
// read from /proc/locks, which lists the locks of every process, those of
// other PID namespaces included. A process waiting for a lock holds none.
func Flocked() (map[FileID]bool, error) {
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	held := map[FileID]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 fe:00:9978139 0 EOF"; a waiter
		// has "->" after the number.
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" {
			continue
		}
		parts := strings.Split(fields[5], ":")
		if len(parts) != 3 {
			continue
		}
		major, err1 := strconv.ParseUint(parts[0], 16, 32)
		minor, err2 := strconv.ParseUint(parts[1], 16, 32)
		ino, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		held[FileID{Dev: unix.Mkdev(uint32(major), uint32(minor)), Ino: ino}] = true
	}
	return held, sc.Err()
}

// Flock is flock(2) on fd, taken again when a signal interrupts the wait.
func Flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
