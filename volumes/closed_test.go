package volumes

import (
	"testing"

	"golang.org/x/sys/unix"
)

// reuseAfterClose closes s and puts an empty directory at the descriptor
// numbers fds had, as the next open of this process may: a read through a
// closed store's descriptor would then read that directory.
func reuseAfterClose(t *testing.T, s *Store, fds ...int) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	empty, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(empty) })
	for _, fd := range fds {
		if fd == empty {
			continue
		}
		if err := unix.Dup3(empty, fd, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
	}
}

// The reads that skip the store's lock fail on a closed store, even when
// its descriptor numbers were reused meanwhile.
func TestClosedStoreLockFreeReads(t *testing.T) {
	t.Run("ImportState", func(t *testing.T) {
		s, _ := newStore(t)
		if _, err := s.Seeds().Create(Request{Namespace: "shop", Name: "pg"}); err != nil {
			t.Fatal(err)
		}
		reuseAfterClose(t, s, s.dirFd)
		if st, err := s.Seeds().ImportState("shop", "pg"); err == nil {
			t.Fatalf("ImportState on a closed store = %v, want an error", st)
		}
	})
	t.Run("Pins.Remove", func(t *testing.T) {
		s, _ := newStore(t)
		reuseAfterClose(t, s, s.rootFd)
		if err := s.Pins().Remove("ctr1"); err == nil {
			t.Fatal("Pins.Remove on a closed store: no error")
		}
	})
}
