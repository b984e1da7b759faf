package copyup

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/testutil"
)

// shift65536 maps host ids 65536-131071 to 0-65535, as a pod's user
// namespace does, and the rest to the overflow id.
func shift65536(uid, gid uint32) (uint32, uint32) {
	m := func(id uint32) uint32 {
		if id >= 65536 && id < 131072 {
			return id - 65536
		}
		return 65534
	}
	return m(uid), m(gid)
}

func acl(entries ...[3]uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

func capV3(rootid uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, capRevision3|1) // effective
	b = binary.LittleEndian.AppendUint32(b, 1<<unix.CAP_NET_BIND_SERVICE)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint32(b, rootid)
}

func TestMapXattr(t *testing.T) {
	const undef = 0xffffffff
	in := acl([3]uint32{1, 6, undef}, [3]uint32{aclUser, 7, 65536 + 1000}, [3]uint32{4, 5, undef},
		[3]uint32{aclGroup, 5, 65536 + 50}, [3]uint32{0x10, 7, undef}, [3]uint32{0x20, 5, undef})
	want := acl([3]uint32{1, 6, undef}, [3]uint32{aclUser, 7, 1000}, [3]uint32{4, 5, undef},
		[3]uint32{aclGroup, 5, 50}, [3]uint32{0x10, 7, undef}, [3]uint32{0x20, 5, undef})
	if got := mapXattr(shift65536, xattrACLDefault, in); string(got) != string(want) {
		t.Errorf("ACL: got %x, want %x", got, want)
	}
	if got := mapXattr(shift65536, xattrCapability, capV3(65536)); len(got) != capV2Size ||
		binary.LittleEndian.Uint32(got) != capRevision2|1 || string(got[4:]) != string(capV3(65536)[4:capV2Size]) {
		t.Errorf("capability of the container's root: got %x, want revision 2 with the same sets", got)
	}
	if got := mapXattr(shift65536, xattrCapability, capV3(65536+7)); string(got) != string(capV3(7)) {
		t.Errorf("capability of root 65543: got %x, want %x", got, capV3(7))
	}
	for _, v := range [][]byte{nil, {1, 2, 3}, acl()[:3], append(acl([3]uint32{aclUser, 7, 65536}), 0)} {
		if got := mapXattr(shift65536, xattrACLAccess, v); string(got) != string(v) {
			t.Errorf("malformed ACL %x changed to %x", v, got)
		}
	}
	if got := mapXattr(shift65536, "user.note", []byte("65536")); string(got) != "65536" {
		t.Errorf("other attribute changed to %q", got)
	}
}

// TestCopyUserNamespace copies a tree whose owners, ACL and capability show
// a pod's shifted ids, and gets the ids the pod sees.
func TestCopyUserNamespace(t *testing.T) {
	testutil.RequireRoot(t, "needs root")
	l := newLayout(t)
	b := tree{t, l.rootfs}
	b.dir("data", 0o750)
	b.file("data/ping", "x", 0o755)
	b.chown("data", 65536+999, 65536+999)
	b.chown("data/ping", 65536, 65536)
	a := acl([3]uint32{1, 7, 0xffffffff}, [3]uint32{aclUser, 7, 65536 + 1000}, [3]uint32{4, 5, 0xffffffff},
		[3]uint32{0x10, 7, 0xffffffff}, [3]uint32{0x20, 5, 0xffffffff})
	if err := unix.Setxattr(b.path("data/ping"), xattrACLAccess, a, 0); errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
		t.Skip("no POSIX ACLs here")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(b.path("data/ping"), xattrCapability, capV3(65536), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(l.rootfs, "/data", l.dst, Options{Owners: shift65536}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string][2]uint32{l.dst: {999, 999}, l.dst + "/ping": {0, 0}} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s is %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}
	buf := make([]byte, 256)
	n, err := unix.Getxattr(l.dst+"/ping", xattrACLAccess, buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := buf[:n]; binary.LittleEndian.Uint32(got[aclHeaderSize+aclEntrySize+4:]) != 1000 {
		t.Errorf("copied ACL %x does not name user 1000", got)
	}
	n, err = unix.Getxattr(l.dst+"/ping", xattrCapability, buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := buf[:n]; n != capV2Size || binary.LittleEndian.Uint32(got)&capRevisionMask != capRevision2 {
		t.Errorf("copied capability %x, want revision 2", got)
	}
}
