package volumes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/nri-volumes/nri-volumes/internal/fsx"
	"github.com/nri-volumes/nri-volumes/volumes/internal/copyuplog"
)

// Open opens the store below root, creating ROOT/volumes (mode 0700) if it is
// missing, and removes the temporary entries left by a process that died in
// the middle of a write. The index of references is built from disk when an
// operation first needs it. Several processes may open the same root at once.
// Options bound the wait for the lock (WithContext), skip the removal of
// leftovers (WithoutSweep), tell what Open repaired (WithRepairs) and set
// what a configuration reload changes later with Reconfigure
// (WithLockTimeout, WithFormatBudget, WithSizePolicy).
func Open(root string, opts ...Option) (*Store, error) {
	o := openOptions{ctx: context.Background(), sweep: true}
	for _, opt := range opts {
		opt(&o)
	}
	s, err := open(o.ctx, root, o.sweep)
	if err != nil {
		return nil, err
	}
	s.lockTimeout.Store(int64(o.lockTimeout))
	s.formatBudget.Store(int64(o.formatBudget))
	if o.policy != nil {
		s.policy = *o.policy
	}
	if o.repairs != nil {
		for _, r := range s.repairs {
			o.repairs(r)
		}
	}
	return s, nil
}

// open is Open's work: it resolves root, opens the descriptors the Store
// works through (ROOT, ROOT/volumes, the lock file) and, under the lock,
// the holding areas, and with clean sweeps what killed processes left. It
// stays one function because each descriptor must be closed on every later
// failure, in the order it was opened.
func open(ctx context.Context, root string, clean bool) (*Store, error) {
	vdir := filepath.Join(root, volumesDir)
	if err := os.MkdirAll(vdir, 0o700); err != nil {
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(vdir)
	if err != nil {
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	abs, err := filepath.Abs(vdir)
	if err != nil {
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	resolvedRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	rootFd, err := unix.Open(resolvedRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open volume store: %w", &os.PathError{Op: "open", Path: resolvedRoot, Err: err})
	}
	dirFd, err := unix.Open(resolved, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(rootFd)
		return nil, fmt.Errorf("open volume store: %w", &os.PathError{Op: "open", Path: resolved, Err: err})
	}
	st, err := fsx.Fstat(dirFd)
	if err != nil {
		unix.Close(rootFd)
		unix.Close(dirFd)
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	lfd, err := unix.Openat(dirFd, lockFile, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		unix.Close(rootFd)
		unix.Close(dirFd)
		return nil, fmt.Errorf("open volume store: %w", &os.PathError{Op: "open", Path: filepath.Join(resolved, lockFile), Err: err})
	}
	s := &Store{
		root:    root,
		dir:     resolved,
		given:   abs,
		pins:    Pins{dir: filepath.Join(resolvedRoot, pinsDir)},
		dev:     st.Dev,
		sem:     make(chan struct{}, 1),
		rootFd:  rootFd,
		dirFd:   dirFd,
		refsFd:  -1,
		podsFd:  -1,
		trashFd: -1,
		spare:   spares{fd: -1},
		formats: formatter{
			fd:      -1,
			ready:   map[formatKey][]formatEntry{},
			pending: map[formatKey]int{},
			owned:   map[string]int{},
			idle:    formatIdle,
			lastErr: map[formatKey]error{},
			changed: make(chan struct{}),
		},
		lock: os.NewFile(uintptr(lfd), filepath.Join(resolved, lockFile)),
	}
	s.formats.turn = sync.NewCond(&s.formats.mu)
	s.pins.s = s
	if s.copyUps, err = copyuplog.Open(dirFd); err != nil {
		s.Close()
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	// The index is built when first needed, so a process that only copies
	// up (the OCI hook) never reads the reference lists.
	err = s.locked(ctx, "opening the volume store", unix.LOCK_EX, false, func() error {
		var err error
		if s.refsFd, err = ensureDirAt(dirFd, refsDir); err != nil {
			return err
		}
		if s.podsFd, err = ensureDirAt(dirFd, podsDir); err != nil {
			return err
		}
		if s.trashFd, err = ensureDirAt(dirFd, trashDir); err != nil {
			return err
		}
		if clean {
			return s.recoverLocked()
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open volume store: %w", err)
	}
	return s, nil
}
