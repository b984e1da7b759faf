// Command mksubvol makes a btrfs subvolume, as any process may without a
// capability: mksubvol DIR NAME makes DIR/NAME with BTRFS_IOC_SUBVOL_CREATE;
// mksubvol -ro DIR makes the subvolume DIR, its own, read-only
// (BTRFS_IOC_SUBVOL_SETFLAGS).
// The end-to-end tests build it statically into a test image, whose busybox
// has no btrfs tool.
package main

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	btrfsIocSubvolCreate   = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocSubvolSetflags = 0x4008941a // _IOW(0x94, 26, __u64)
	btrfsSubvolRdonly      = 1 << 1
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mksubvol DIR NAME | mksubvol -ro DIR")
		os.Exit(2)
	}
	dir := os.Args[1]
	if dir == "-ro" {
		dir = os.Args[2]
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mksubvol: %s: %v\n", dir, err)
		os.Exit(1)
	}
	var req uintptr
	var arg unsafe.Pointer
	if os.Args[1] == "-ro" {
		flags := uint64(btrfsSubvolRdonly)
		req, arg = btrfsIocSubvolSetflags, unsafe.Pointer(&flags)
	} else {
		var args struct {
			Fd   int64
			Name [4088]byte
		}
		copy(args.Name[:], os.Args[2])
		req, arg = btrfsIocSubvolCreate, unsafe.Pointer(&args)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); errno != 0 {
		fmt.Fprintf(os.Stderr, "mksubvol %s %s: %v\n", os.Args[1], os.Args[2], errno)
		os.Exit(1)
	}
}
