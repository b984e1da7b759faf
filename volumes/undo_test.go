package volumes

import (
	"errors"
	"slices"
	"testing"
)

// TestUndoLogOrder checks that a rollback undoes the last change first,
// runs every undo even after one fails, and keeps the cause.
func TestUndoLogOrder(t *testing.T) {
	var u undoLog
	var ran []int
	errUndo := errors.New("undo failed")
	for i := range 3 {
		u.add(func() error {
			ran = append(ran, i)
			if i == 1 {
				return errUndo
			}
			return nil
		})
	}
	cause := errors.New("step failed")
	err := u.rollback(cause)
	if !slices.Equal(ran, []int{2, 1, 0}) {
		t.Errorf("undos ran in the order %v, want [2 1 0]", ran)
	}
	if !errors.Is(err, cause) || !errors.Is(err, errUndo) {
		t.Errorf("rollback = %v, want the cause and the failed undo", err)
	}
	if u.rollback(cause); len(ran) != 3 {
		t.Errorf("a second rollback ran the undos again: %v", ran)
	}
}
