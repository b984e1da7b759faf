package plugin

// SetAfterBindWalk makes f run between the walk to each bind source and the
// look at the mounts below it, with the source's path, until restore: for
// tests that race a rename against that look deterministically.
func SetAfterBindWalk(f func(real string)) (restore func()) {
	old := afterBindWalk
	afterBindWalk = f
	return func() { afterBindWalk = old }
}
