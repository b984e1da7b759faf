package volumes

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Check reports every entry of the store that is not a usable volume:
// directories without a readable volume.json, symlinks, entries with invalid
// names and leftovers of interrupted writes that Open could not delete; and
// mounts below the store and loop devices backed by its files that no sized
// volume accounts for. The store's own files (.lock, .refs, .pods, .trash,
// .copyup-bytes, .copyup-stats, .image-empty, .spare, .frozen) are no problem, but
// each entry in .trash is: data of a removed volume left undeleted (Name
// .trash/ENTRY, Namespace empty). Below ROOT/pins it reports stray pins,
// entries where nothing is mounted, and anything that is not a pin; their
// Namespace is empty and their Name the path below ROOT.
func (s *Store) Check() ([]Problem, error) {
	var probs []Problem
	err := s.locked(context.Background(), "", unix.LOCK_SH, false, func() error {
		defer func() { probs = append(probs, s.checkSizedLocked()...) }()
		nss, err := fsx.ReadDirNames(s.dirFd)
		if err != nil {
			return fmt.Errorf("read volume store: %w", err)
		}
		sort.Strings(nss)
		for _, ns := range nss {
			switch {
			case isStoreEntry(ns):
				continue
			case strings.HasPrefix(ns, tmpPrefix):
				probs = append(probs, Problem{Namespace: ns, Reason: "leftover temporary entry"})
				continue
			case ValidateNamespace(ns) != nil:
				probs = append(probs, Problem{Namespace: ns, Reason: "not a valid namespace name"})
				continue
			}
			nsFd, err := fsx.OpenDir(s.dirFd, ns)
			if err != nil {
				probs = append(probs, Problem{Namespace: ns, Reason: "namespace is not a directory (or a symlink)"})
				continue
			}
			names, err := fsx.ReadDirNames(nsFd)
			if err != nil {
				unix.Close(nsFd)
				return fmt.Errorf("namespace %q: %w", ns, err)
			}
			sort.Strings(names)
			for _, name := range names {
				switch {
				case strings.HasPrefix(name, tmpPrefix):
					probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "leftover temporary entry"})
				case ValidateName(name) != nil:
					probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "not a valid volume name"})
				default:
					if _, err := s.readVolume(nsFd, ns, name); err != nil {
						probs = append(probs, Problem{Namespace: ns, Name: name, Reason: err.Error()})
					} else if state, _ := importState(s.dirFd, ns, name); state == importCutShort {
						probs = append(probs, Problem{Namespace: ns, Name: name, Reason: errImportCutShort})
					}
				}
			}
			unix.Close(nsFd)
		}
		trashProbs, err := s.checkTrashLocked()
		probs = append(probs, trashProbs...)
		if err != nil {
			return err
		}
		probs = append(probs, s.checkLedger()...)
		pinProbs, err := s.pins.checkPins()
		probs = append(probs, pinProbs...)
		return err
	})
	return probs, err
}

// checkSizedLocked reports the mounts below the store other than the _data
// of a sized image volume, and the loop devices backed by a file of the
// store other than the disk.img of one.
func (s *Store) checkSizedLocked() []Problem {
	var probs []Problem
	sized := func(path, leaf string) (string, string, bool) {
		ns, name, ok := splitVolumePath(s.dir, path, leaf)
		if !ok {
			return ns, name, false
		}
		v, err := s.getLocked(ns, name)
		return ns, name, err == nil && v.Backend == BackendImage
	}
	mounts, err := fsx.MountsUnder(s.dir)
	if err != nil {
		probs = append(probs, Problem{Reason: fmt.Sprintf("cannot read the mount table: %v", err)})
	}
	for _, mp := range mounts {
		if s.inFormats(mp) {
			continue // an image being formatted by a live process
		}
		if ns, name, ok := sized(mp, dataDir); !ok {
			probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "mount at " + mp + " that no sized volume accounts for"})
		}
	}
	for dev, backing := range sizer.BoundLoops() {
		if !strings.HasPrefix(backing, s.dir+"/") || s.inFormats(backing) {
			continue
		}
		if ns, name, ok := sized(backing, imageFile); !ok {
			probs = append(probs, Problem{Namespace: ns, Name: name, Reason: "loop device " + dev + " holds " + backing + ", which no sized volume accounts for"})
		}
	}
	sort.Slice(probs, func(i, j int) bool { return probs[i].Reason < probs[j].Reason })
	return probs
}
