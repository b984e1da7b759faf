package volumes

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The reaper's priorities as ps and ionice show them: nice 19, best-effort
// level 7 (ioprio_get(2): class << 13 | level).
const (
	wantNice = 19
	wantIO   = 2<<13 | 7
)

// lowThreads returns the IDs of this process's threads at the reaper's
// nice value.
func lowThreads(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var tids []int
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join("/proc/self/task", e.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// Fields after the command's closing parenthesis: state is
		// field 3, nice field 19 (proc(5)).
		rest := string(data[strings.LastIndexByte(string(data), ')')+2:])
		fields := strings.Fields(rest)
		if len(fields) < 17 {
			t.Fatalf("%s/stat: %q", e.Name(), data)
		}
		if fields[16] == strconv.Itoa(wantNice) {
			tid, _ := strconv.Atoi(e.Name())
			tids = append(tids, tid)
		}
	}
	return tids
}

// TestReaperYieldsToStarts: the deletion of removed volumes' data, which
// runs while the next pods' containers start, runs on a thread of its own at
// the lowest CFS weight and best-effort I/O priority, still deletes, and
// takes its priority with it when the store closes (issue 19).
func TestReaperYieldsToStarts(t *testing.T) {
	if prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0); err == nil && 20-prio >= wantNice {
		t.Skipf("the test runs at nice %d already", 20-prio)
	}
	s, root := newStore(t)
	low := lowThreads(t)
	before := len(low)
	beforeOthers := slices.DeleteFunc(low, func(tid int) bool { return tid == os.Getpid() })
	s.Start(Reaper(func(err error) { t.Errorf("reaper: %v", err) }))

	var tids []int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if tids = lowThreads(t); len(tids) > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no thread at nice %d after Start(Reaper): the reaper runs at the priority of container starts", wantNice)
		}
	}
	if len(tids) != before+1 {
		t.Fatalf("%d threads at nice %d after Start(Reaper), want %d: the low priority spread beyond the reaper", len(tids), wantNice, before+1)
	}
	found := false
	for _, tid := range tids {
		prio, _, e := unix.Syscall(unix.SYS_IOPRIO_GET, 1 /* IOPRIO_WHO_PROCESS */, uintptr(tid), 0)
		if e == 0 && int(prio) == wantIO {
			found = true
		}
	}
	if !found {
		t.Errorf("no thread at nice %d has the I/O priority best-effort 7", wantNice)
	}

	a := anon("pod1", "app", "/a")
	vols, _, err := s.Acquire("c1", []Request{a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(vols[0].Mountpoint, "sub", "f"), "data")
	if err := s.Release("c1"); err != nil {
		t.Fatal(err)
	}
	if removed, err := s.RemovePodVolumes("pod1"); err != nil || len(removed) != 1 {
		t.Fatalf("RemovePodVolumes = %v, %v", removed, err)
	}
	trash := filepath.Join(root, volumesDir, trashDir)
	for deadline := time.Now().Add(10 * time.Second); len(dirNames(t, trash)) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("trash still holds %v", dirNames(t, trash))
		}
	}

	// The thread exits with the reaper, unless it is the process's main
	// thread, which Go parks for good instead: either way it runs nothing
	// else (runtime.LockOSThread).
	s.Close()
	spread := func() []int {
		var out []int
		for _, tid := range lowThreads(t) {
			if tid != os.Getpid() {
				out = append(out, tid)
			}
		}
		return out
	}
	for deadline := time.Now().Add(10 * time.Second); len(spread()) > len(beforeOthers); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("threads stay at nice %d after Close: %v (the reaper's: %v)", wantNice, spread(), tids)
		}
	}
}
