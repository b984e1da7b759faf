package volumes

import (
	"path/filepath"
)

// The Paths view: the store's answers about its places on disk.

// VolumesDir is the directory below which the volumes' data lives, for
// checks of its file system (can it be idmapped?); callers never build
// paths in it.
func (p Paths) VolumesDir() string { return p.s.dir }

// BlobCacheDir is the directory of the node's blob cache.
func (p Paths) BlobCacheDir() string { return filepath.Join(p.s.root, blobsDir) }

// VolumeForMountSource returns the volume whose data a mount source names:
// ROOT/volumes/NS/NAME/_data, with ROOT as the store was opened or with its
// symlinks resolved (the form the store hands out, and so the one containerd
// reports back), or a subpath's pin.
func (p Paths) VolumeForMountSource(source string) (ns, name string, ok bool) {
	s := p.s
	source = filepath.Clean(source)
	for _, dir := range []string{s.dir, s.given} {
		if ns, name, ok := splitVolumePath(dir, source, dataDir); ok {
			return ns, name, true
		}
	}
	return s.pins.volume(source)
}
