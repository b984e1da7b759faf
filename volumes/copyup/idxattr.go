package copyup

import "encoding/binary"

// Extended attributes that hold ids: POSIX ACLs name users and groups, and a
// file capability of revision 3 names the root of the user namespace it
// applies in. When Options.Owners translates owners, these are translated
// the same way, so a copy out of a user-namespaced container's rootfs
// carries the ids the container sees in them too.
const (
	xattrACLAccess  = "system.posix_acl_access"
	xattrACLDefault = "system.posix_acl_default"
	xattrCapability = "security.capability"

	aclVersion    = 2
	aclHeaderSize = 4
	aclEntrySize  = 8
	aclUser       = 0x02
	aclGroup      = 0x08

	capRevisionMask = 0xFF000000
	capRevision2    = 0x02000000
	capRevision3    = 0x03000000
	capV2Size       = 20
	capV3Size       = 24
)

// mapXattr returns value, the content of attribute attr, with the ids in it
// translated by owners; it returns value itself for any other attribute or
// a value it does not recognize.
func mapXattr(owners func(uid, gid uint32) (uint32, uint32), attr string, value []byte) []byte {
	switch attr {
	case xattrACLAccess, xattrACLDefault:
		return mapACL(owners, value)
	case xattrCapability:
		return mapCapability(owners, value)
	}
	return value
}

func mapACL(owners func(uid, gid uint32) (uint32, uint32), value []byte) []byte {
	if len(value) < aclHeaderSize || (len(value)-aclHeaderSize)%aclEntrySize != 0 ||
		binary.LittleEndian.Uint32(value) != aclVersion {
		return value
	}
	out := append([]byte(nil), value...)
	for off := aclHeaderSize; off < len(out); off += aclEntrySize {
		tag := binary.LittleEndian.Uint16(out[off:])
		id := binary.LittleEndian.Uint32(out[off+4:])
		switch tag {
		case aclUser:
			id, _ = owners(id, 0)
		case aclGroup:
			_, id = owners(0, id)
		default:
			continue
		}
		binary.LittleEndian.PutUint32(out[off+4:], id)
	}
	return out
}

// mapCapability translates the root id of a revision 3 file capability. One
// whose root is the container's root becomes revision 2, which applies to
// whoever is root where the file is used: through the container's idmapped
// mount, the container's root.
func mapCapability(owners func(uid, gid uint32) (uint32, uint32), value []byte) []byte {
	if len(value) != capV3Size || binary.LittleEndian.Uint32(value)&capRevisionMask != capRevision3 {
		return value
	}
	root, _ := owners(binary.LittleEndian.Uint32(value[capV2Size:]), 0)
	if root == 0 {
		out := append([]byte(nil), value[:capV2Size]...)
		magic := binary.LittleEndian.Uint32(out)&^capRevisionMask | capRevision2
		binary.LittleEndian.PutUint32(out, magic)
		return out
	}
	out := append([]byte(nil), value...)
	binary.LittleEndian.PutUint32(out[capV2Size:], root)
	return out
}
