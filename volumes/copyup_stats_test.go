package volumes

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func readCopyUps(t *testing.T, r *CopyUpReader) []CopyUpResult {
	t.Helper()
	var got []CopyUpResult
	if err := r.Read(func(res CopyUpResult) { got = append(got, res) }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestCopyUpRecords checks that what hooks record, in other processes and
// other Store values, the plugin's reader reads once each, in order: only
// what came after the reader was made, nothing twice, a line still being
// written on the next read, a torn line never.
func TestCopyUpRecords(t *testing.T) {
	plugin, root := newStore(t)
	hook := openStore(t, root)
	if err := hook.CopyUpLog().Record(CopyUpResult{Bytes: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := plugin.CopyUpLog().NewReader()
	if err != nil {
		t.Fatal(err)
	}
	if got := readCopyUps(t, r); len(got) != 0 {
		t.Errorf("a new reader read copy-ups from before it: %+v", got)
	}
	want := []CopyUpResult{
		{Bytes: 4096, Files: 3, Duration: 1500 * time.Microsecond},
		{Reason: CopyUpPodBudget, Bytes: 100, Files: 1, Duration: time.Millisecond},
		{Reason: CopyUpNoSpace},
	}
	for _, res := range want {
		if err := hook.CopyUpLog().Record(res); err != nil {
			t.Fatal(err)
		}
	}
	if got := readCopyUps(t, r); !reflect.DeepEqual(got, want) {
		t.Errorf("read %+v, want %+v", got, want)
	}
	if got := readCopyUps(t, r); len(got) != 0 {
		t.Errorf("read again: %+v", got)
	}

	// A line caught half-written is read whole once it is; one torn for
	// good (its writer ran out of space and ended it) is skipped.
	path := filepath.Join(root, volumesDir, copyUpStatsFile)
	appendFile(t, path, `{"bytes":7,"fi`)
	if got := readCopyUps(t, r); len(got) != 0 {
		t.Errorf("read a half-written line: %+v", got)
	}
	appendFile(t, path, `les":2,"ns":5}`+"\n"+`{"bytes":`+"\n")
	if err := hook.CopyUpLog().Record(CopyUpResult{Reason: CopyUpLimit, Files: 9}); err != nil {
		t.Fatal(err)
	}
	want = []CopyUpResult{{Bytes: 7, Files: 2, Duration: 5}, {Reason: CopyUpLimit, Files: 9}}
	if got := readCopyUps(t, r); !reflect.DeepEqual(got, want) {
		t.Errorf("read %+v, want %+v", got, want)
	}
	if probs, err := plugin.Check(); err != nil || len(probs) != 0 {
		t.Errorf("Check with a copy-up log: %+v, %v", probs, err)
	}
}

// TestCopyUpRecordsNoSymlink checks that a symlink planted at the log's
// name is neither written through nor read through.
func TestCopyUpRecordsNoSymlink(t *testing.T) {
	s, root := newStore(t)
	outside := filepath.Join(t.TempDir(), "victim")
	writeFile(t, outside, "")
	if err := os.Symlink(outside, filepath.Join(root, volumesDir, copyUpStatsFile)); err != nil {
		t.Fatal(err)
	}
	if err := s.CopyUpLog().Record(CopyUpResult{}); err == nil {
		t.Error("recorded a copy-up through a symlink")
	}
	if b, _ := os.ReadFile(outside); len(b) != 0 {
		t.Errorf("wrote through the symlink: %q", b)
	}
	if _, err := s.CopyUpLog().NewReader(); err == nil {
		t.Error("opened the copy-up log through a symlink")
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}
