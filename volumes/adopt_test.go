package volumes

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// runtimeCopy makes, below a directory standing for containerd's
// containers/ID/volumes, the copy containerd makes of an image's VOLUME: a
// directory owned 999:999 mode 0750 with files, a symlink and a hard link.
// It returns the parent's descriptor and the directory's name.
func runtimeCopy(t *testing.T) (int, string, string) {
	t.Helper()
	parent := t.TempDir()
	dir := filepath.Join(parent, "4f3c")
	if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"conf/app.conf": "port 6379\n", "dump.rdb": "REDIS"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("conf/app.conf", filepath.Join(dir, "app.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "dump.rdb"), filepath.Join(dir, "conf", "dump-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 999, 999); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, parent, "4f3c"
}

func newAnonymous(t *testing.T, s *Store) *Volume {
	t.Helper()
	vols, _, err := s.Acquire("ctr1", []Request{{Namespace: "default", Owner: &Owner{PodSandboxID: "pod1", Container: "app", Target: "/data"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return vols[0]
}

// TestAdoptCopyUp takes over the runtime's copy of an image VOLUME as the
// new volume's _data: its content, owner and mode, with the volume marked
// copied up, and the volume's empty directory left where the copy was.
func TestAdoptCopyUp(t *testing.T) {
	s, _ := newStore(t)
	v := newAnonymous(t, s)
	parentFd, parent, name := runtimeCopy(t)
	got, err := s.CopyUps().Adopt(v.Namespace, v.Name, parentFd, name, AdoptLimits{MaxEntries: 100})
	if err != nil {
		t.Fatalf("AdoptCopyUp: %v", err)
	}
	if got.Entries != 5 || got.Files != 2 || got.Bytes != int64(len("port 6379\n")+len("REDIS")) {
		t.Errorf("AdoptCopyUp counted %+v, want 5 entries, 2 files, 15 bytes", got)
	}
	data, err := os.ReadFile(filepath.Join(v.Mountpoint, "conf", "app.conf"))
	if err != nil || string(data) != "port 6379\n" {
		t.Fatalf("volume's conf/app.conf = %q, %v", data, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(v.Mountpoint, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 999 || st.Gid != 999 || st.Mode&0o7777 != 0o750 {
		t.Errorf("volume's root is %d:%d %o, want the image's 999:999 750", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if entries, err := os.ReadDir(filepath.Join(parent, name)); err != nil || len(entries) != 0 {
		t.Errorf("the runtime's directory holds %v (%v), want the volume's empty _data", entries, err)
	}
	if need, err := needsCopyUp(s.CopyUps().Status(v.Namespace, v.Name)); err != nil || need {
		t.Errorf("NeedsCopyUp after adoption = %v, %v; want false", need, err)
	}
}

// TestAdoptCopyUpDeclines leaves the volume and the runtime's copy as they
// were whenever the hook would do something else or the copy is out of
// bounds, so that the caller copies up the usual way.
func TestAdoptCopyUpDeclines(t *testing.T) {
	cases := map[string]struct {
		prepare func(t *testing.T, s *Store, v *Volume, dir string)
		lim     AdoptLimits
	}{
		"more entries than allowed": {lim: AdoptLimits{MaxEntries: 4}},
		"more bytes than allowed":   {lim: AdoptLimits{MaxEntries: 100, MaxBytes: 10}},
		"no bytes allowed":          {lim: AdoptLimits{MaxEntries: 100, MaxBytes: -1}},
		"a fifo": {lim: AdoptLimits{MaxEntries: 100}, prepare: func(t *testing.T, _ *Store, _ *Volume, dir string) {
			if err := unix.Mkfifo(filepath.Join(dir, "conf", "pipe"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		"volume already has data": {lim: AdoptLimits{MaxEntries: 100}, prepare: func(t *testing.T, _ *Store, v *Volume, _ string) {
			if err := os.WriteFile(filepath.Join(v.Mountpoint, "mine"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		"copy-up done before": {lim: AdoptLimits{MaxEntries: 100}, prepare: func(t *testing.T, s *Store, v *Volume, _ string) {
			if err := s.CopyUps().Copy(v.Namespace, v.Name, func(string) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}},
		"copy-up cut short": {lim: AdoptLimits{MaxEntries: 100}, prepare: func(t *testing.T, s *Store, v *Volume, _ string) {
			if err := os.WriteFile(filepath.Join(filepath.Dir(v.Mountpoint), copyUpStarted), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		"volume locked elsewhere": {lim: AdoptLimits{MaxEntries: 100}, prepare: func(t *testing.T, s *Store, v *Volume, _ string) {
			fd, err := s.lockVolume(v.Namespace, v.Name, unix.LOCK_EX)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
		}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, _ := newStore(t)
			v := newAnonymous(t, s)
			parentFd, parent, dir := runtimeCopy(t)
			if tc.prepare != nil {
				tc.prepare(t, s, v, filepath.Join(parent, dir))
			}
			before, _ := os.ReadDir(v.Mountpoint)
			_, err := s.CopyUps().Adopt(v.Namespace, v.Name, parentFd, dir, tc.lim)
			if !errors.Is(err, ErrNotAdopted) {
				t.Fatalf("AdoptCopyUp = %v, want ErrNotAdopted", err)
			}
			after, _ := os.ReadDir(v.Mountpoint)
			if len(after) != len(before) {
				t.Errorf("the volume went from %d to %d entries", len(before), len(after))
			}
			if _, err := os.Stat(filepath.Join(parent, dir, "conf", "app.conf")); err != nil {
				t.Errorf("the runtime's copy changed: %v", err)
			}
		})
	}
}

// TestAcquireSaysCreated: Acquire marks the volumes it made, and only
// those, so that the plugin knows they need copy-up without looking.
func TestAcquireSaysCreated(t *testing.T) {
	s, _ := newStore(t)
	req := []Request{{Namespace: "default", Name: "data"}}
	first, _, err := s.Acquire("ctr1", req, nil)
	if err != nil {
		t.Fatal(err)
	}
	second, _, err := s.Acquire("ctr2", req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !first[0].Created || second[0].Created {
		t.Errorf("Created: first Acquire %v, second %v; want true, false", first[0].Created, second[0].Created)
	}
}
