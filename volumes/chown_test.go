package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func intp(n int) *int { return &n }

func modep(m uint32) *uint32 { return &m }

// ownerOf returns the uid, gid and permission bits of path.
func ownerOf(t *testing.T, path string) (uint32, uint32, os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid, fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSticky)
}

func TestCreateOwnership(t *testing.T) {
	s, root := newStore(t)
	v, err := s.Create("default", "owned", CreateOptions{UID: intp(1000), GID: intp(1001), Mode: modep(0o2770)})
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := ownerOf(t, v.Mountpoint); uid != 1000 || gid != 1001 || mode != 0o770|os.ModeSetgid {
		t.Errorf("_data is %d:%d %v, want 1000:1001 with mode 2770", uid, gid, mode)
	}
	// The options are in volume.json, and survive reopening the store.
	got, err := openStore(t, root).Get("default", "owned")
	if err != nil {
		t.Fatal(err)
	}
	if got.UID == nil || *got.UID != 1000 || got.GID == nil || *got.GID != 1001 || got.Mode != "2770" {
		t.Errorf("reopened volume: UID %v GID %v Mode %q", got.UID, got.GID, got.Mode)
	}
	// Only the uid: root's group, the default mode.
	v, err = s.Create("default", "uid-only", CreateOptions{UID: intp(7)})
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := ownerOf(t, v.Mountpoint); uid != 7 || gid != 0 || mode != 0o755 {
		t.Errorf("_data is %d:%d %v, want 7:0 0755", uid, gid, mode)
	}
	// A volume made on first use takes the request's options.
	vols, _, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "first-use", CreateOptions: CreateOptions{GID: intp(5), Mode: modep(0o700)}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := ownerOf(t, vols[0].Mountpoint); uid != 0 || gid != 5 || mode != 0o700 {
		t.Errorf("_data made on first use is %d:%d %v, want 0:5 0700", uid, gid, mode)
	}

	for _, bad := range []CreateOptions{{UID: intp(-1)}, {GID: intp(1 << 32)}, {Mode: modep(0o10000)}} {
		if _, err := s.Create("default", "bad", bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create with %+v: %v, want ErrInvalid", bad, err)
		}
		if _, _, err := s.Acquire("c2", []Request{{Namespace: "default", Name: "bad", CreateOptions: bad}}, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("Acquire with %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "volumes", "default", "bad")); !os.IsNotExist(err) {
		t.Errorf("a refused volume was left behind: %v", err)
	}
}

func TestChownRoot(t *testing.T) {
	s, root := newStore(t)
	v, err := s.Create("default", "v", CreateOptions{Labels: map[string]string{"k": "v"}, Mode: modep(0o1770)})
	if err != nil {
		t.Fatal(err)
	}
	// Many containers with U start at once; one chown wins, and it stays.
	var wg sync.WaitGroup
	results := make([]bool, 8)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			done, err := s.CopyUps().ChownRoot("default", "v", 100+i, 100+i)
			if err != nil {
				t.Error(err)
			}
			results[i] = done
		}(i)
	}
	wg.Wait()
	winner := -1
	for i, done := range results {
		if done {
			if winner >= 0 {
				t.Fatalf("both %d and %d chowned", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no call chowned")
	}
	id := uint32(100 + winner)
	if uid, gid, mode := ownerOf(t, v.Mountpoint); uid != id || gid != id || mode != 0o770|os.ModeSticky {
		t.Errorf("_data is %d:%d %v, want %d:%d with mode 1770", uid, gid, mode, id, id)
	}
	got, err := openStore(t, root).Get("default", "v")
	if err != nil {
		t.Fatal(err)
	}
	if got.Chowned == nil || got.Chowned.UID != int(id) || got.Labels["k"] != "v" || got.Mode != "1770" {
		t.Errorf("volume.json after the chown: Chowned %+v, Labels %v, Mode %q", got.Chowned, got.Labels, got.Mode)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "volumes", "default", "v"))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			t.Errorf("temporary file %s left in the volume", e.Name())
		}
	}
	if _, err := s.CopyUps().ChownRoot("default", "missing", 1, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("ChownRoot of a missing volume: %v, want ErrNotFound", err)
	}
	if _, err := s.CopyUps().ChownRoot("default", "v", -1, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("ChownRoot to uid -1: %v, want ErrInvalid", err)
	}
}

// TestChownSurvivesLaterCopyUp: container A mounts a named volume with
// nocopy,U, so only its root is chowned to A's user (1000) and recorded.
// Container B then mounts the still-empty volume over an image directory
// owned by 999 and copies up. The copy brings the image's content, but the
// volume's root stays A's user's: the record says so, and it stops any
// later chown.
func TestChownSurvivesLaterCopyUp(t *testing.T) {
	s, _ := newStore(t)
	v, err := s.Create("default", "data", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := s.CopyUps().ChownRoot("default", "data", 1000, 1000); err != nil || !done {
		t.Fatalf("ChownRoot = %v, %v", done, err)
	}
	if need, err := needsCopyUp(s.CopyUps().Status("default", "data")); err != nil || !need {
		t.Fatalf("NeedsCopyUp after a chown alone = %v, %v, want true", need, err)
	}
	err = s.CopyUps().Copy("default", "data", func(dir string) error {
		if err := os.WriteFile(filepath.Join(dir, "from-image"), []byte("x"), 0o644); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return err
		}
		return os.Chown(dir, 999, 999)
	})
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid, mode := ownerOf(t, v.Mountpoint); uid != 1000 || gid != 1000 || mode != 0o750 {
		t.Errorf("after B's copy-up _data is %d:%d %v, want the chowned 1000:1000 with the image's mode 0750", uid, gid, mode)
	}
	if _, err := os.Stat(filepath.Join(v.Mountpoint, "from-image")); err != nil {
		t.Errorf("the copy-up brought no content: %v", err)
	}
}
