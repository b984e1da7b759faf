package plugin

import (
	"errors"
	"path/filepath"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// removeGoneImageTargets removes the store's records of targets where an
// image has nothing to copy (see imageTargetEmpty) for the images whose
// config blob is no longer in containerd's content store: the image was
// removed, and a digest never comes back with other content. It costs one
// stat per recorded image and runs in the background after Synchronize.
// When the content store itself cannot be read, nothing is removed.
func removeGoneImageTargets(store *volumes.Store, images *ImageVolumes, log *logrus.Logger) {
	var st unix.Stat_t
	if err := unix.Stat(images.contentDir, &st); err != nil {
		log.WithError(err).Warn("not removing the empty image targets of removed images: cannot read containerd's content store (containerdRoot)")
		return
	}
	removed, err := store.EmptyTargets().RemoveAllBut(images.hasConfig)
	if err != nil {
		log.WithError(err).Warn("removing the empty image targets of removed images")
	}
	if removed > 0 {
		log.WithField("records", removed).Info("removed the empty image targets of removed images")
	}
}

// hasConfig reports whether the config blob hexDigest is in containerd's
// content store; when it cannot tell, it says it is.
func (iv *ImageVolumes) hasConfig(hexDigest string) bool {
	var st unix.Stat_t
	err := unix.Lstat(filepath.Join(iv.contentDir, hexDigest), &st)
	return !errors.Is(err, unix.ENOENT)
}
