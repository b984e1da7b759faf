package volumes

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nri-volumes/nri-volumes/internal/bytesize"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// maxMetaSize bounds what the store reads of one volume.json.
const maxMetaSize = 16 << 20

// Owner says which container an anonymous volume belongs to.
type Owner struct {
	PodSandboxID string `json:"PodSandboxID"`
	PodName      string `json:"PodName,omitempty"`
	Container    string `json:"Container"`
	Target       string `json:"Target"`
}

// Volume is one volume as the store shows it. volume.json holds its identity
// (see record); UsedBy comes from the index of references.
type Volume struct {
	Name      string `json:"Name"`
	Namespace string `json:"Namespace"`
	// Mountpoint is ROOT/volumes/NAMESPACE/NAME/_data, derived from the name,
	// never taken from disk.
	Mountpoint string            `json:"Mountpoint"`
	CreatedAt  time.Time         `json:"CreatedAt"`
	Labels     map[string]string `json:"Labels"`
	Anonymous  bool              `json:"Anonymous"`
	Owner      *Owner            `json:"Owner,omitempty"`
	// UID, GID and Mode are the owner and mode its root was created with,
	// when given (volume create --opt, or uid/gid/mode in the annotation);
	// Mode is octal, such as "0770".
	UID  *int   `json:"UID,omitempty"`
	GID  *int   `json:"GID,omitempty"`
	Mode string `json:"Mode,omitempty"`
	// Chowned records the chown of its root to a container's user (option U),
	// which happens once.
	Chowned *IDs `json:"Chowned,omitempty"`
	// UsedBy lists the IDs of the containers using the volume, sorted.
	UsedBy []string `json:"UsedBy"`
	// Size is the disk usage of the data, set only when asked for.
	Size *int64 `json:"Size,omitempty"`
	// Limit is the enforced size of a sized volume in bytes; 0: unbounded.
	Limit int64 `json:"Limit,omitempty"`
	// Backend is what enforces Limit (image or btrfs); empty when unbounded.
	Backend Backend `json:"Backend,omitempty"`
	// Inodes is the inode count asked for an image volume's file system
	// (mkfs.ext4 -N; about that many, rounded to whole inode tables); 0: mkfs.ext4's
	// default, one per 16 KiB.
	Inodes int64 `json:"Inodes,omitempty"`
	// PersistLater says this Acquire made the volume for a Request with
	// PersistLater: it is not durable until Persist.
	PersistLater bool `json:"-"`
	// Created says this Acquire made the volume: it is empty and was never
	// copied up into.
	Created bool `json:"-"`
	// ClonePending names the source (NAME or NAME@SNAP) of a clone whose
	// data the copy-up hook of the first container that uses it still
	// has to copy; see clone_pending.go.
	ClonePending string `json:"ClonePending,omitempty"`
	// cloneOf is what a volume being made is cloned from; see
	// CreateOptions.CloneOf.
	cloneOf *CloneSource
	// seeding makes the volume with the import marker in place; see
	// Seeds.Create.
	seeding bool
}

// MarshalJSON encodes v with UsedBy and Labels as [] and {} rather than null,
// so consumers of the JSON never have to tell the two apart.
func (v Volume) MarshalJSON() ([]byte, error) {
	type plain Volume
	p := plain(v)
	if p.UsedBy == nil {
		p.UsedBy = []string{}
	}
	if p.Labels == nil {
		p.Labels = map[string]string{}
	}
	return json.Marshal(p)
}

func (v *Volume) key() string { return volumeKey(v.Namespace, v.Name) }

// IDs are a uid and a gid.
type IDs struct {
	UID int `json:"UID"`
	GID int `json:"GID"`
}

// record is what volume.json holds: the identity of a volume, written when
// it is created, and replaced once more if its root is chowned (Chowned).
// Files written by earlier versions also carry UsedBy and Mountpoint;
// decoding ignores them.
type record struct {
	Name      string            `json:"Name"`
	Namespace string            `json:"Namespace"`
	CreatedAt time.Time         `json:"CreatedAt"`
	Labels    map[string]string `json:"Labels"`
	Anonymous bool              `json:"Anonymous"`
	Owner     *Owner            `json:"Owner,omitempty"`
	UID       *int              `json:"UID,omitempty"`
	GID       *int              `json:"GID,omitempty"`
	Mode      string            `json:"Mode,omitempty"`
	Chowned   *IDs              `json:"Chowned,omitempty"`
	Limit     int64             `json:"Limit,omitempty"`
	Backend   Backend           `json:"Backend,omitempty"`
	Inodes    int64             `json:"Inodes,omitempty"`
}

func volumeKey(ns, name string) string { return ns + "/" + name }

// CloneSource names what a new volume is cloned from: volume Volume of the
// new volume's namespace, or its snapshot Snapshot when that is set.
type CloneSource struct {
	Volume   string
	Snapshot string
}

// String is NAME or NAME@SNAP, as the cloneOf annotation writes it.
func (c CloneSource) String() string {
	if c.Snapshot == "" {
		return c.Volume
	}
	return c.Volume + "@" + c.Snapshot
}

// Backend names how a volume's size is enforced; sized.go says what each
// one is.
type Backend string

// The backends. BackendNone is an unbounded directory on ROOT's file system;
// BackendAuto is only a policy: image, on any file system, ROOT on btrfs
// included (sized.go says why not btrfs).
const (
	BackendNone  Backend = ""
	BackendAuto  Backend = "auto"
	BackendImage Backend = "image"
	BackendBtrfs Backend = "btrfs"
)

// SizeSum is the sum of the sizes of a set of sized volumes and their count.
type SizeSum struct {
	Bytes int64 `json:"bytes"`
	Count int64 `json:"count"`
}

// rootAttrs are the owner and mode a new volume's _data gets.
func (v *Volume) rootAttrs() (uid, gid int, mode uint32) {
	uid, gid, mode = 0, 0, 0o755
	if v.UID != nil {
		uid = *v.UID
	}
	if v.GID != nil {
		gid = *v.GID
	}
	if v.Mode != "" {
		m, _ := strconv.ParseUint(v.Mode, 8, 32)
		mode = uint32(m)
	}
	return uid, gid, mode
}

// sizerFor returns the backend that enforces the size of a volume of
// backend b. Its methods run under the store's exclusive lock, except
// Usage.
func sizerFor(b Backend) (sizer.Sizer, error) {
	switch b {
	case BackendImage:
		return sizer.Image{}, nil
	case BackendBtrfs:
		return sizer.Btrfs{}, nil
	}
	return nil, fmt.Errorf("%w: unknown size backend %q", errBroken, b)
}

// FormatBytes formats n in binary units for messages: 10MiB, 1.5GiB, 512B.
func FormatBytes(n int64) string { return bytesize.Format(n) }
