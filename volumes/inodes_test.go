package volumes

import (
	"errors"
	"fmt"
	"testing"
)

// TestSizedInodes makes image volumes with inodes=N: df -i in each shows
// about N inodes (mkfs.ext4 rounds up to whole inode tables), df still
// shows exactly the size, and inspect reports N. Inodes without a size is
// refused, naming the option.
func TestSizedInodes(t *testing.T) {
	requireLoop(t)
	s, _ := openSized(t)
	for _, tc := range []struct{ size, inodes int64 }{
		{16 << 20, 100},
		{64 << 20, 200_000},
		{1 << 30, 5_000},
	} {
		name := fmt.Sprintf("i%d-%d", tc.size>>20, tc.inodes)
		v, err := s.Create("default", name, CreateOptions{Size: tc.size, Inodes: tc.inodes})
		if err != nil {
			t.Fatal(err)
		}
		if v.Inodes != tc.inodes {
			t.Errorf("%s: Inodes %d, want %d", name, v.Inodes, tc.inodes)
		}
		st := statfsAcquired(t, s, name)
		// mkfs.ext4 rounds to whole inode table blocks in each group.
		if got := int64(st.Files); got < tc.inodes-tc.inodes/10-64 || got > tc.inodes+tc.inodes/10+256 {
			t.Errorf("df -i in %s shows %d inodes, want about %d", name, got, tc.inodes)
		}
		if got := int64(st.Blocks) * st.Bsize; got != tc.size {
			t.Errorf("df in %s shows %d KiB, want %d", name, got>>10, tc.size>>10)
		}
		if err := s.Release("ctr-" + name); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get("default", name); err != nil || got.Inodes != tc.inodes {
			t.Errorf("Get %s: Inodes %v, %v; want %d", name, got, err, tc.inodes)
		}
	}
	if _, err := s.Create("default", "unsized", CreateOptions{Inodes: 1000}); !errors.Is(err, ErrInvalid) {
		t.Errorf("inodes without a size: %v, want ErrInvalid", err)
	}
}
