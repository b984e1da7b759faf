package volumes

import (
	"github.com/nri-volumes/nri-volumes/volumes/internal/copyuplog"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// The store's layout on disk: every name the store gives a directory, file,
// marker or temporary entry of its own, what lives there and who clears it
// away. ROOT is the store's root, VOLS is ROOT/volumes, and VOL is one
// volume's directory, VOLS/NAMESPACE/NAME.
const (
	// volumesDir is VOLS, under ROOT: the namespaces, each a directory of
	// volumes, beside the store's own dot-entries below.
	volumesDir = "volumes"

	// lockFile, in VOLS, is flocked by every mutation of the store (see
	// Store.locked). It is never removed.
	lockFile = ".lock"

	// tmpPrefix starts every temporary entry of the store. A valid name
	// starts with a letter or digit, so no volume can be mistaken for one.
	// Open's recovery pass (recover.go) moves those in VOLS and its
	// namespaces into the trash and removes those in refsDir and podsDir;
	// those in a volume's snapshotsDir go with the next operation that takes
	// the volume's flock; those in frozenDir with the next thaw of the
	// abandoned.
	tmpPrefix = ".tmp-"

	// trashDir, in VOLS, holds removed volumes and leftovers until their
	// data is deleted, outside the lock: by the reaper (Reaper) or the
	// CLI's rm and prune (ReapTrash). Check reports what stays.
	trashDir = ".trash"

	// spareDir, in VOLS, holds volume directories and list files built ahead
	// of requests (spareVolumePrefix, spareFilePrefix). The Spares worker moves
	// what an earlier process left there into the trash (sweepSparesLocked).
	spareDir          = ".spare"
	spareVolumePrefix = "v-"
	spareFilePrefix   = "f-"

	// formatsDir, in VOLS, holds ext4 images formatted ahead of requests,
	// each flocked by its maker. Open's recovery pass moves the entries of
	// dead processes into the trash (removeDeadFormatsLocked).
	formatsDir = ".formats"

	// frozenDir, in VOLS, holds a marker per volume a snapshot froze,
	// flocked while it is frozen. Open and the thawer (Thawer) thaw and
	// remove those that a dead process left (thawAbandonedLocked).
	frozenDir = ".frozen"

	// refsDir and podsDir, in VOLS, hold the reference lists: per container
	// the volumes it uses, per pod its anonymous volumes. Release removes a
	// container's; SetReferences, at the plugin's Synchronize, removes those
	// of containers and pods gone and lists that cannot be read.
	refsDir = ".refs"
	podsDir = ".pods"

	// ledgerFile, in VOLS, is the ledger of sizes charged per namespace.
	// It is never removed; Open rebuilds a missing one.
	ledgerFile = ".sizes"

	// copyUpBytesDir, in VOLS, holds per pod sandbox the bytes its
	// copy-ups wrote (limits.copyUpMaxSizePerPod). Synchronize removes the
	// records of pods gone (PodBudgets.ForgetAllBut).
	copyUpBytesDir = ".copyup-bytes"

	// copyUpStatsFile, in VOLS, is the log of copy-ups for the plugin's
	// metrics (CopyUpLog); its writer rotates it to copyUpStatsOld once
	// full.
	copyUpStatsFile = copyuplog.File
	copyUpStatsOld  = copyuplog.OldFile

	// imageEmptyDir, in VOLS, records the image targets that have nothing
	// to copy up. The plugin removes the records of images gone
	// (EmptyTargets.RemoveAllBut).
	imageEmptyDir = ".image-empty"

	// pinsDir, under ROOT, holds the pins of containers' mounts. Pins.Remove
	// removes a container's, RemoveStale those of containers gone, Open
	// those no longer mounted.
	pinsDir = "pins"

	// imageFile, in VOL, is the ext4 disk image of a volume of the image
	// backend, mounted at _data. It goes with its volume.
	imageFile = sizer.ImageFile

	// snapshotsDir, in VOL, holds the volume's snapshots, each a directory
	// with its snapshotMeta. Temporary entries there are removed by the next
	// operation that takes the volume's flock.
	snapshotsDir = "snapshots"
	snapshotMeta = "snapshot.json"

	// importMarker is the file in VOL that an import holds with an flock
	// from its check that no container uses the volume to its end. Acquire
	// refuses a volume that has one: locked, the import is running;
	// unlocked, an import was killed part-way and the data is partial,
	// which the next import throws away.
	importMarker = "import-running"

	// metaFile, in VOL, is the volume's metadata.
	metaFile = "volume.json"
	// dataDir, in VOL, is the volume's data, the directory containers mount.
	dataDir = sizer.DataDir

	// copyUpStarted, copyUpSwitching and copyUpDone, in VOL, record how far
	// the volume's copy-up went; the next copy-up of the volume finishes one
	// that was switching or throws away one that had started.
	copyUpStarted   = "copyup-started"
	copyUpSwitching = "copyup-switching"
	copyUpDone      = "copyup-done"
	// copyUpStaging is the directory a copy-up fills: in VOL, a sibling of
	// _data on the same file system, or inside _data when _data is a mount
	// of its own. Each copy-up removes what an earlier one left there first.
	copyUpStaging = ".nri-volumes-copyup"

	// blobsDir is ROOT/blobs, the node's cache of the blobs that seeding pulls
	// read, by digest (internal/ociartifact.BlobCache): the store names it, the
	// plugin fills it.
	blobsDir = "blobs"

	// clonePending, in VOL, names the source (NAME or NAME@SNAP) of a
	// clone still to be filled by the copy-up hook; it goes once the copy is
	// done (see clone_pending.go).
	clonePending = "clone-pending"

	// exportMount, in a temporary entry of VOL/snapshots, is where export
	// mounts the snapshot it reads a volume in use from; the next operation
	// that takes the volume's flock removes one a dead process left (see
	// snapshot_export.go).
	exportMount = "mnt"
)

// isStoreEntry reports whether name, an entry of VOLS, is one of the
// store's own entries rather than a namespace or a leftover.
func isStoreEntry(name string) bool {
	switch name {
	case lockFile, refsDir, podsDir, trashDir, copyUpBytesDir, copyUpStatsFile, copyUpStatsOld,
		imageEmptyDir, spareDir, ledgerFile, formatsDir, frozenDir:
		return true
	}
	return false
}
