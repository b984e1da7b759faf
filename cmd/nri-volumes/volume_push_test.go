package main

import (
	"os"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// A volume a container uses is refused for push unless --live, before any
// network access (the reference names no registry that answers), and the
// message names the container; with --live it goes on, over TLS only, never
// falling back to plain HTTP. Push and pull check their arguments first.
func TestVolumePushRefusesInUse(t *testing.T) {
	root := t.TempDir()
	mustCLI(t, root, "create", "busy")
	s, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Acquire("ctr1", []volumes.Request{{Namespace: "default", Name: "busy"}}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()
	r := runCLI(t, root, "", "push", "busy", "127.0.0.1:1/busy:1")
	if r.code != 1 || !strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "ctr1") || !strings.Contains(r.stderr, "--live") {
		t.Errorf("push of a volume in use: %+v", r)
	}
	r = runCLI(t, root, "", "push", "--live", "busy", "127.0.0.1:1/busy:1")
	if r.code != 1 || strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "plain HTTP is not used") {
		t.Errorf("push --live went on to the registry: %+v", r)
	}
	for _, args := range [][]string{{"push", "busy"}, {"pull", "ref"}, {"push", "--layer-size", "1", "busy", "r:1"}} {
		if r := runCLI(t, root, "", args...); r.code != 2 {
			t.Errorf("%v: %+v, want a usage error", args, r)
		}
	}
	if r := runCLI(t, root, "", "pull", "not a ref", "v"); r.code != 1 || !strings.Contains(r.stderr, "refused artifact") {
		t.Errorf("pull of a bad reference: %+v", r)
	}
}

// A sized volume that a container uses is pushed without --live: it is
// read from a temporary snapshot, so push goes on to the registry.
func TestVolumePushSizedInUseReadsSnapshot(t *testing.T) {
	testutil.RequireRoot(t, "sized volumes need root")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop devices: %v", err)
	}
	root := t.TempDir()
	mustCLI(t, root, "create", "-o", "size=8Mi", "sized")
	s, err := volumes.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Acquire("ctr1", []volumes.Request{{Namespace: "default", Name: "sized"}}, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Release("ctr1"); err != nil {
			t.Error(err)
		}
	}()
	r := runCLI(t, root, "", "push", "sized", "127.0.0.1:1/sized:1")
	if r.code != 1 || strings.Contains(r.stderr, "in use") || !strings.Contains(r.stderr, "plain HTTP is not used") {
		t.Errorf("push of a sized volume in use did not go on to the registry: %+v", r)
	}
}
