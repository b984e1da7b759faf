package plugin

import (
	"errors"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// adoptMaxEntries bounds the tree of an image VOLUME that CreateContainer
// adopts, and so the time counting it takes inside the NRI request (a few
// milliseconds per thousand entries). A larger tree is copied by the hook.
const adoptMaxEntries = 10000

// criVolumesDir is where containerd's CRI plugin keeps a container's own
// image-volume directories, below its root: containers/ID/volumes.
const criVolumesDir = "io.containerd.grpc.v1.cri/containers"

// adopter hands a container's new volumes containerd's own copies of the
// image's VOLUMEs. containerd (2.2 and later alike, unless
// ignore_image_defined_volumes is set) copies the image's content at each
// VOLUME into a directory below its root before it asks NRI plugins about
// the container, and mounts it there; the plugin replaces that mount with
// the volume's. Adopting the copy, rather than copying the image a second
// time in the hook, saves the container a copy and, when nothing else needs
// it, the hook's run.
type adopter struct {
	cfg   *config.Config
	store *volumes.Store
	podID string
	ctrID string
	log   *logrus.Entry
	// dirs are the names of containerd's copies below parent, by target.
	dirs   map[string]string
	parent int // containerd's volumes directory of the container; -1 until opened
}

// newAdopter finds containerd's copies among the container's mounts. Only
// a source that is exactly containerd's directory for this container is
// taken: a CRI mount that names another container's copy is not one.
func newAdopter(cfg *config.Config, store *volumes.Store, req *CreateRequest, log *logrus.Entry) *adopter {
	a := &adopter{cfg: cfg, store: store, podID: req.PodSandboxID, ctrID: req.ContainerID, log: log, parent: -1}
	if req.UserNS || !volumes.IsHex64(req.ContainerID) {
		// With a user namespace, the hook maps the image's ids back to
		// the ones the container sees, which the end-to-end tests check;
		// whether containerd's copy holds the same ids depends on how
		// its snapshotter maps them, so such a container is left to
		// the hook.
		return a
	}
	prefix := filepath.Join(cfg.ContainerdRoot, criVolumesDir, req.ContainerID, "volumes") + "/"
	for _, m := range req.Mounts {
		name, ok := strings.CutPrefix(filepath.Clean(m.Source), prefix)
		if !ok || !isRuntimeImageVolume(m, req.ContainerID) || !volumes.IsHex64(name) {
			continue
		}
		if a.dirs == nil {
			a.dirs = map[string]string{}
		}
		a.dirs[path.Clean(m.Destination)] = name
	}
	return a
}

// adopt fills the new volume v, mounted at target, with containerd's copy
// of the image's content there, and says whether it did. When it did not,
// nothing changed and the hook copies up as before.
func (a *adopter) adopt(v *volumes.Volume, target string) bool {
	name, ok := a.dirs[path.Clean(target)]
	if !ok || !v.Anonymous || !v.Created || v.Limit != 0 || v.UID != nil || v.GID != nil || v.Mode != "" {
		// Only an anonymous volume this request made: the exchange gives
		// _data a new inode, and a volume that existed may be mounted
		// (nocopy) by a container that would keep the old one; the hook
		// fills _data in place. A named volume is left to the hook even
		// when new: another pod's request may hand its path to runc before
		// this one's exchange, and containerd's copy carries this
		// container's SELinux label. A volume made with an owner or mode
		// keeps them when the image's directory is empty, which the hook
		// knows how to do.
		return false
	}
	log := a.log.WithFields(logrus.Fields{"volume": v.Namespace + "/" + v.Name, "target": target})
	if a.parent < 0 {
		fd, err := a.openParent()
		if err != nil {
			log.WithError(err).Debug("copy-up: cannot open containerd's image-volume directory; the hook copies")
			a.dirs = nil
			return false
		}
		a.parent = fd
	}
	start := time.Now()
	var t fsx.Tally
	adopted := false
	adopt := func(used int64) (int64, error) {
		lim := volumes.AdoptLimits{MaxEntries: adoptMaxEntries}
		if n := a.cfg.Limits.CopyUpMaxFiles; n > 0 && n < lim.MaxEntries {
			lim.MaxEntries = n
		}
		lim.MaxBytes, _ = volumes.PodCopyUpMaxBytes(int64(a.cfg.Limits.CopyUpMaxSize), int64(a.cfg.Limits.CopyUpMaxSizePerPod), used)
		var err error
		t, err = a.store.CopyUps().Adopt(v.Namespace, v.Name, a.parent, name, lim)
		adopted = err == nil
		return t.Bytes, err
	}
	var err error
	if a.cfg.Limits.CopyUpMaxSizePerPod > 0 && a.podID != "" {
		err = a.store.PodBudgets().TryCharge(a.podID, adopt)
	} else {
		_, err = adopt(0)
	}
	if adopted && err != nil {
		// The volume is filled; only its bytes went uncounted.
		log.WithError(err).Warn("copy-up: adopted containerd's copy, but its bytes are not charged to the pod's copy-up budget")
		err = nil
	}
	if err != nil {
		if !errors.Is(err, volumes.ErrNotAdopted) && !errors.Is(err, volumes.ErrBusy) {
			log.WithError(err).Warn("copy-up: adopting containerd's copy failed; the hook copies")
		} else {
			log.WithError(err).Debug("copy-up: containerd's copy not adopted; the hook copies")
		}
		return false
	}
	res := volumes.CopyUpResult{Bytes: t.Bytes, Files: t.Files, Duration: time.Since(start)}
	if err := a.store.CopyUpLog().Record(res); err != nil {
		log.WithError(err).Warn("copy-up: not recorded for the plugin's metrics")
	}
	log.WithFields(logrus.Fields{"files": t.Files, "bytes": t.Bytes}).Debug("copy-up: adopted containerd's copy of the image's content")
	return true
}

// openParent opens containerd's volumes directory of the container, beneath
// containerd's root and through no symlink.
func (a *adopter) openParent() (int, error) {
	root, err := unix.Open(a.cfg.ContainerdRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	return fsx.OpenDir(root, path.Join(criVolumesDir, a.ctrID, "volumes"))
}

func (a *adopter) close() {
	if a.parent >= 0 {
		unix.Close(a.parent)
		a.parent = -1
	}
}
