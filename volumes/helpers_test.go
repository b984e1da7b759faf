package volumes

import "golang.org/x/sys/unix"

// Helpers that tests of several files share.

// needsCopyUp reports whether a container that mounts the volume needs the
// copy-up hook, for tests that ask only that of CopyUpStatus.
func needsCopyUp(st CopyUpStatus, err error) (bool, error) { return st.Needed, err }

// sizeSums returns the sums of the sizes of the sized volumes per namespace
// and in all, from the ledger: O(namespaces), whatever the number of
// volumes.
func (s *Store) sizeSums() (map[string]SizeSum, SizeSum, error) {
	var per map[string]SizeSum
	var total SizeSum
	err := s.withLock(unix.LOCK_SH, func() error {
		per = make(map[string]SizeSum, len(s.idx.sizes.ns))
		for ns, sum := range s.idx.sizes.ns {
			per[ns] = sum
		}
		total = s.idx.sizes.total
		return nil
	})
	return per, total, err
}
