package volumes

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/nri-volumes/nri-volumes/volumes/internal/archive"
	"github.com/nri-volumes/nri-volumes/volumes/internal/sizer"
)

// Errors returned by the store are wrapped around one of these classes, so
// callers decide with errors.Is and show the wrapped message to people.
var (
	// ErrNotFound means the volume (or its namespace) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInUse means a container uses the volume, or something else holds it
	// (a copy-up in progress, a mount inside it).
	ErrInUse = errors.New("in use")
	// ErrInvalid means the input was rejected: a bad name, namespace or request.
	ErrInvalid = errors.New("invalid")
	// ErrExists means a volume with that name already exists.
	ErrExists = errors.New("already exists")
)

// ErrBusy means a wait for the store's lock ran out of time: another
// operation, most likely of another process (a CLI prune or rm), held it.
var ErrBusy = errors.New("volume store busy")

// ErrLimit means a configured limit refused the request: a namespace's
// budget of volume sizes.
var ErrLimit = errors.New("over the limit")

// ErrNotAdopted is wrapped by the error of CopyUps.Adopt when it left
// everything as it was, so that the caller copies up the usual way instead.
var ErrNotAdopted = errors.New("not adopted")

// ErrArchive marks a tar that Import refuses: a hostile or unsupported entry,
// or one beyond the limits. The message names the entry.
var ErrArchive = archive.ErrRefused

// errBroken marks a volume entry that exists on disk but cannot be used: a
// symlink, a missing or unreadable volume.json, a missing _data.
var errBroken = sizer.ErrBroken

// errBadList marks a list file that cannot be trusted.
var errBadList = errors.New("unreadable reference list")

// errSemTimeout: ctx ended while another operation of this process held the
// in-process lock.
var errSemTimeout = errors.New("in-process lock not taken")

// errSparesRunning: the store is closed or keeps spares already, so
// Spares has nothing to start.
var errSparesRunning = errors.New("spares already kept")

// OpError is the error of an operation on one volume: which volume, the
// operation where the error could come from several, the containers that
// hold the volume when they are the reason, and the cause, which wraps one
// of the classes above (ErrNotFound, ErrInUse, ...) so that errors.Is still
// tells them apart. Every error the store returns about one volume is one,
// so the message names the volume the same way everywhere.
type OpError struct {
	// Op names the operation ("copy-up", "export", "import") where the
	// caller's own call does not say it; empty otherwise.
	Op        string
	Namespace string
	Name      string
	// Anonymous says the volume asked for was anonymous.
	Anonymous bool
	// Refs are the containers using the volume, for ErrInUse.
	Refs []string
	Err  error
}

// Error reads `volume "NAME" in namespace "NS": OP: CAUSE by container(s) A, B`,
// leaving out what is not set.
func (e *OpError) Error() string {
	var b strings.Builder
	if e.Anonymous {
		b.WriteString("anonymous ")
	}
	fmt.Fprintf(&b, "volume %q in namespace %q: ", e.Name, e.Namespace)
	if e.Op != "" {
		b.WriteString(e.Op + ": ")
	}
	b.WriteString(e.Err.Error())
	if len(e.Refs) > 0 {
		b.WriteString(" by container(s) " + strings.Join(e.Refs, ", "))
	}
	return b.String()
}

// Unwrap returns the cause, so that errors.Is(err, ErrInUse) and the like
// see through the OpError.
func (e *OpError) Unwrap() error { return e.Err }

// volumeError wraps err with the volume it is about.
func volumeError(ns, name string, err error) error {
	return &OpError{Namespace: ns, Name: name, Err: err}
}

// opError wraps err with the volume it is about and the operation that
// failed.
func opError(op, ns, name string, err error) error {
	return &OpError{Op: op, Namespace: ns, Name: name, Err: err}
}

// publicError turns an internal read error into the classified one callers
// see: a volume that is absent or broken is not found.
func publicError(ns, name string, err error) error {
	switch {
	case errors.Is(err, errBroken):
		return volumeError(ns, name, fmt.Errorf("%w: %w", ErrNotFound, err))
	case isAbsent(err):
		return volumeError(ns, name, ErrNotFound)
	}
	return volumeError(ns, name, err)
}

// isAbsent reports whether a read error means the volume does not exist, as
// opposed to exists but is broken (a broken one may wrap ENOENT as its cause).
func isAbsent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errBroken)
}
