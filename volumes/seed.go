package volumes

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
)

// Seeding a volume from a registry (the plugin's from: items). The pull
// runs outside any NRI request, into a volume that exists from its start:
// Seeds.Create makes it with the import marker already in place and
// unlocked, the state an import cut short leaves, so that Acquire refuses it
// from the moment it has its name. Import then fills it (it takes that state
// for one whose partial data it throws away) and removes the marker when it
// ends well; a failed Import empties the volume and leaves the marker, so
// that the volume stays held if the seeder cannot remove it (a CLI export
// holds it) or dies first. A process that dies part-way leaves the marker,
// and with it a volume that no container takes as complete; the next
// seeding pull starts it over, and volume check and volume rm show it and
// remove it.

// ImportState is what the import marker of a volume says.
type ImportState int

// The import states of a volume.
const (
	// ImportNone: no import is running or was cut short; the data is
	// complete.
	ImportNone ImportState = iota
	// ImportFilling: an import is filling it now.
	ImportFilling
	// ImportCutShort: an import or a seeding pull was cut short, or has
	// not started yet: the data is partial.
	ImportCutShort
)

// Create makes the volume r asks for (named, or the anonymous one of
// r.Owner) to be filled by Import, held out of containers until Import ends
// well. It fails with ErrExists if the volume is there.
func (sd Seeds) Create(r Request) (*Volume, error) {
	s := sd.s
	if err := ValidateNamespace(r.Namespace); err != nil {
		return nil, err
	}
	name := r.Name
	var owner *Owner
	if name == "" {
		if r.Owner == nil {
			return nil, fmt.Errorf("%w: an anonymous volume needs its owner", ErrInvalid)
		}
		owner, name = r.Owner, AnonymousName(*r.Owner)
	} else if err := ValidateNamedVolume(name); err != nil {
		return nil, err
	}
	if r.CloneOf != nil {
		return nil, volumeError(r.Namespace, name, fmt.Errorf("%w: a clone is not seeded", ErrInvalid))
	}
	if err := r.CreateOptions.validate(); err != nil {
		return nil, volumeError(r.Namespace, name, err)
	}
	v := newVolume(r.Namespace, name, r.CreateOptions, owner)
	v.seeding = true
	return s.createOne(v, r.CreateOptions, fmt.Sprintf("seeding volume %q of namespace %q", name, r.Namespace))
}

// ImportState reads the import marker of volume name in namespace ns. A
// volume that does not exist gives ErrNotFound, as Get does (a broken one
// too, wrapped). It reads without the store's lock, so an NRI request may
// call it while another process holds the lock: a volume appears complete
// under its name and its volume.json never changes.
func (sd Seeds) ImportState(ns, name string) (ImportState, error) {
	if err := ValidateNamespace(ns); err != nil {
		return ImportNone, err
	}
	if err := ValidateName(name); err != nil {
		return ImportNone, err
	}
	s := sd.s
	var state int
	err := s.whileOpen(func() error {
		nsFd, err := fsx.OpenDir(s.dirFd, ns)
		if err != nil {
			return publicError(ns, name, err)
		}
		defer unix.Close(nsFd)
		if _, err := s.loadVolume(nsFd, ns, name); err != nil {
			return publicError(ns, name, err)
		}
		if state, err = importState(s.dirFd, ns, name); err != nil {
			return volumeError(ns, name, err)
		}
		return nil
	})
	if err != nil {
		return ImportNone, err
	}
	switch state {
	case importFilling:
		return ImportFilling, nil
	case importCutShort:
		return ImportCutShort, nil
	}
	return ImportNone, nil
}
