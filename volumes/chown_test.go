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
	vols, err := s.Acquire("c1", []Request{{Namespace: "default", Name: "first-use", CreateOptions: CreateOptions{GID: intp(5), Mode: modep(0o700)}}})
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
		if _, err := s.Acquire("c2", []Request{{Namespace: "default", Name: "bad", CreateOptions: bad}}); !errors.Is(err, ErrInvalid) {
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
			done, err := s.ChownRoot("default", "v", 100+i, 100+i)
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
	if _, err := s.ChownRoot("default", "missing", 1, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("ChownRoot of a missing volume: %v, want ErrNotFound", err)
	}
	if _, err := s.ChownRoot("default", "v", -1, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("ChownRoot to uid -1: %v, want ErrInvalid", err)
	}
}
