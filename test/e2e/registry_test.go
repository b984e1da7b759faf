package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fstree"
	"github.com/nri-volumes/nri-volumes/test/harness"
)

// node is a store standing for one node, driven through the CLI binary
// with the registry's CA and credentials.
type node struct {
	t    *testing.T
	bin  string
	root string
	reg  *harness.Registry
	home string
}

func newNode(t *testing.T, bin string, reg *harness.Registry) *node {
	return &node{t: t, bin: bin, root: t.TempDir(), reg: reg, home: t.TempDir()}
}

// try runs `nri-volumes volume ARGS` against the node's store.
func (n *node) try(args ...string) (stdout, stderr string, err error) {
	n.t.Helper()
	argv := append([]string{"volume"}, args...)
	argv = append(argv, "--root", n.root)
	if args[0] == "push" || args[0] == "pull" {
		argv = append(argv, "--auth-file", n.reg.AuthFile, "--ca-file", n.reg.CAFile)
	}
	cmd := exec.Command(n.bin, argv...)
	// No credentials or config of the machine's user leak in.
	cmd.Env = []string{"HOME=" + n.home, "PATH=" + os.Getenv("PATH")}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func (n *node) must(args ...string) string {
	n.t.Helper()
	out, stderr, err := n.try(args...)
	if err != nil {
		n.t.Fatalf("volume %s: %v: %s", strings.Join(args, " "), err, stderr)
	}
	return out
}

func (n *node) data(name string) string {
	return filepath.Join(n.root, "volumes", "default", name, "_data")
}

// cliBin is the nri-volumes binary, without the containerd runtime: the
// registry tests drive only the CLI, with two stores for two nodes.
func cliBin(t *testing.T) string {
	t.Helper()
	harness.RequireRoot(t)
	pluginBuild.Do(func() {
		pluginBuild.path, pluginBuild.err = harness.BuildPluginTo(binDir)
	})
	if pluginBuild.err != nil {
		t.Fatalf("build nri-volumes: %v", pluginBuild.err)
	}
	return pluginBuild.path
}

// fullTree describes every entry below dir as a user checking a copy
// would: type, owner, mode, mtime to the nanosecond, xattrs, symlink
// target, content hash, and which entries are one inode (hard links).
func fullTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("%o %d:%d %d.%09d", st.Mode, st.Uid, st.Gid, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " " + hex.EncodeToString(sum[:8])
			if first, ok := inodes[st.Ino]; ok {
				desc += " link of " + first
			} else {
				inodes[st.Ino] = rel
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			sz, _ := unix.Llistxattr(p, nil)
			if sz > 0 {
				buf := make([]byte, sz)
				sz, _ = unix.Llistxattr(p, buf)
				names := strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00")
				sort.Strings(names)
				for _, x := range names {
					v := make([]byte, 256)
					vn, _ := unix.Lgetxattr(p, x, v)
					desc += fmt.Sprintf(" %s=%q", x, v[:max(vn, 0)])
				}
			}
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fillVolume writes files files of size bytes each, in directories of 100,
// plus the kinds of entries a copy most often gets wrong.
func fillVolume(t *testing.T, dir string, files, size int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(7, 9))
	buf := make([]byte, size)
	for i := range files {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/100))
		if i%100 == 0 {
			if err := os.Mkdir(sub, 0o750); err != nil {
				t.Fatal(err)
			}
		}
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "db", "x"), 0o700))
	must(os.WriteFile(filepath.Join(dir, "db", "table"), []byte("rows"), 0o640))
	must(os.Chown(filepath.Join(dir, "db", "table"), 1000, 1001))
	must(os.Chown(filepath.Join(dir, "db"), 999, 999))
	must(os.Chmod(filepath.Join(dir, "db", "table"), 0o4750))
	must(os.Link(filepath.Join(dir, "db", "table"), filepath.Join(dir, "hard")))
	must(os.Symlink("db/table", filepath.Join(dir, "rel-link")))
	must(os.Symlink("/etc/shadow", filepath.Join(dir, "abs-link")))
	must(unix.Lchown(filepath.Join(dir, "abs-link"), 5, 6))
	must(unix.Setxattr(filepath.Join(dir, "db", "table"), "user.origin", []byte("node-a"), 0))
	must(unix.Setxattr(filepath.Join(dir, "db"), "trusted.overlay.opaque", []byte("y"), 0))
	must(os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	ts := []unix.Timespec{unix.NsecToTimespec(1600000000123456789), unix.NsecToTimespec(1500000000987654321)}
	must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, "abs-link"), ts, unix.AT_SYMLINK_NOFOLLOW))
	must(unix.UtimesNano(filepath.Join(dir, "db", "table"), ts))
	must(unix.UtimesNano(filepath.Join(dir, "db"), ts))
}

// pushed parses push's line: the manifest digest, layers, blobs and bytes
// uploaded.
func pushed(t *testing.T, out string) (digest string, layers, blobs, bytes int64) {
	t.Helper()
	p, err := harness.ParsePushLine(out)
	if err != nil {
		t.Fatal(err)
	}
	return p.Digest, p.Layers, p.Blobs, p.Sent
}

// TestVolumePushPullThroughRegistry moves a volume from one store to
// another through a real registry with TLS and basic auth, and checks that
// pushing again uploads nothing, and after one change a small part.
func TestVolumePushPullThroughRegistry(t *testing.T) {
	bin := cliBin(t)
	reg := harness.StartRegistry(t)
	a, b := newNode(t, bin, reg), newNode(t, bin, reg)

	a.must("create", "--label", "app=db", "data")
	const files, size = 4000, 16 << 10 // 64 MiB
	fillVolume(t, a.data("data"), files, size)
	ref := reg.Host + "/backups/data:v1"
	digest, layers, blobs, sent := pushed(t, a.must("push", "--layer-size", "1Mi", "data", ref))
	_, stored := reg.BlobBytes(t)
	t.Logf("first push: %d layers, %d blobs, %d bytes sent; registry holds %d bytes", layers, blobs, sent, stored)
	if layers < 20 || blobs != layers+1 {
		t.Errorf("first push: %d layers, %d blobs uploaded; want some 50 layers, each uploaded, and the config", layers, blobs)
	}

	if out := b.must("pull", ref, "data"); out != "data\n" {
		t.Errorf("pull printed %q", out)
	}
	want := fullTree(t, a.data("data"))
	fstree.Same(t, "pulled volume", want, fullTree(t, b.data("data")))
	if out := b.must("inspect", "data", "--format", "{{json .Labels}}"); out != "{\"app\":\"db\"}\n" {
		t.Errorf("pulled volume's labels: %q", out)
	}

	// By digest, into another namespace.
	b.must("pull", "-n", "shop", reg.Host+"/backups/data@"+digest, "copy")
	fstree.Same(t, "volume pulled by digest", want, fullTree(t, filepath.Join(b.root, "volumes", "shop", "copy", "_data")))

	// Unchanged data: the same layers, nothing uploaded but the manifest.
	_, _, blobs, _ = pushed(t, a.must("push", "--layer-size", "1Mi", "data", reg.Host+"/backups/data:again"))
	if blobs != 0 {
		t.Errorf("second push of unchanged data uploaded %d blobs", blobs)
	}

	// One file changes: a small part is uploaded, and the registry grows
	// by about that much.
	if err := os.WriteFile(filepath.Join(a.data("data"), "d017", "f01717"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, before := reg.BlobBytes(t)
	_, _, blobs, sent = pushed(t, a.must("push", "--layer-size", "1Mi", "data", reg.Host+"/backups/data:v2"))
	_, after := reg.BlobBytes(t)
	t.Logf("push after one change: %d blobs, %d bytes sent; registry grew by %d of %d bytes", blobs, sent, after-before, stored)
	if sent*20 > stored || (after-before)*20 > stored || blobs > 3 {
		t.Errorf("push after one change sent %d bytes in %d blobs, the registry grew by %d; want under 5%% of %d", sent, blobs, after-before, stored)
	}
	b.must("pull", reg.Host+"/backups/data:v2", "data2")
	fstree.Same(t, "volume pulled after the change", fullTree(t, a.data("data")), fullTree(t, b.data("data2")))
}

// TestVolumePushNeedsCredentialsAndTrust: the registry's basic auth and
// TLS are not bypassed; credentials come from --auth-file or $DOCKER_CONFIG.
func TestVolumePushNeedsCredentialsAndTrust(t *testing.T) {
	bin := cliBin(t)
	reg := harness.StartRegistry(t)
	a := newNode(t, bin, reg)
	a.must("create", "v")
	ref := reg.Host + "/v:1"
	cmd := exec.Command(bin, "volume", "push", "v", ref, "--root", a.root, "--ca-file", reg.CAFile)
	cmd.Env = []string{"HOME=" + a.home}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "401 Unauthorized") {
		t.Errorf("push without credentials: %v %s", err, out)
	}
	cmd = exec.Command(bin, "volume", "push", "v", ref, "--root", a.root)
	cmd.Env = []string{"HOME=" + a.home, "DOCKER_CONFIG=" + reg.ConfigDir}
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate") {
		t.Errorf("push to a registry whose CA is not trusted: %v %s", err, out)
	}
	cmd = exec.Command(bin, "volume", "push", "v", ref, "--root", a.root, "--ca-file", reg.CAFile)
	cmd.Env = []string{"HOME=" + a.home, "DOCKER_CONFIG=" + reg.ConfigDir}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("push with DOCKER_CONFIG: %v %s", err, out)
	}
}

// TestVolumePushScale checks the target at its size: after one
// file of a 1 GiB, 20,000-file volume changes, the next push with the
// default layer size uploads under 5% of the bytes. It writes and
// compresses 1 GiB twice, minutes on a shared machine, so it runs only
// with NRI_VOLUMES_TEST_SCALE=1.
func TestVolumePushScale(t *testing.T) {
	if os.Getenv("NRI_VOLUMES_TEST_SCALE") != "1" {
		t.Skip("set NRI_VOLUMES_TEST_SCALE=1 to push 1 GiB")
	}
	bin := cliBin(t)
	reg := harness.StartRegistry(t)
	a := newNode(t, bin, reg)
	a.must("create", "big")
	fillVolume(t, a.data("big"), 20000, 52<<10)
	_, layers, _, sent := pushed(t, a.must("push", "big", reg.Host+"/scale/big:1"))
	if err := os.WriteFile(filepath.Join(a.data("big"), "d123", "f12345"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, blobs, again := pushed(t, a.must("push", "big", reg.Host+"/scale/big:2"))
	t.Logf("first push: %d layers, %d bytes; after one change: %d blobs, %d bytes (%.2f%%)",
		layers, sent, blobs, again, 100*float64(again)/float64(sent))
	if again*20 > sent {
		t.Errorf("push after one change sent %d of %d bytes, 5%% or more", again, sent)
	}
}
