// Package testutil holds the guards that tests of several packages share.
// Only tests import it.
package testutil

import (
	"os"
	"testing"
)

// RequireRoot skips the test unless it runs as root; why says what the test
// needs root for (mounts, loop devices, chown), and shows in the skip.
func RequireRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip(why)
	}
}
