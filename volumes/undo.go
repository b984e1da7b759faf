package volumes

import "errors"

// undoLog undoes a change of several steps that failed part-way: each step
// records its undo as it makes its change, and rollback undoes them in the
// reverse order, so that a step added later cannot forget its undo and each
// undo finds the state its step left. The shape is that of a metadata
// transaction's rollback; what it undoes is on disk, under the store's lock.
type undoLog struct {
	undos []func() error
}

// add records the undo of a change just made (or about to be made, where a
// failure of the change itself may leave some of it).
func (u *undoLog) add(undo func() error) {
	u.undos = append(u.undos, undo)
}

// rollback runs every undo, the last recorded first, and returns cause
// joined with what failed: an undo that fails does not stop the others.
func (u *undoLog) rollback(cause error) error {
	errs := []error{cause}
	for i := len(u.undos) - 1; i >= 0; i-- {
		errs = append(errs, u.undos[i]())
	}
	u.undos = nil
	return errors.Join(errs...)
}
