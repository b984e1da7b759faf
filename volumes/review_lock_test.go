package volumes

import (
	"testing"
	"time"
)

// TestReviewRequestPathsBoundedBehindBackgroundWaiter: the store's lock is
// held by another process (a CLI op), and a Background-waiting operation of
// this process (Ping, as /healthz runs it; likewise List for a metrics
// scrape, RemoveOrphans after Synchronize) holds the in-process semaphore
// while it waits for the flock with no deadline. The operations the plugin
// runs inside NRI requests must still return within the lock timeout.
func TestReviewRequestPathsBoundedBehindBackgroundWaiter(t *testing.T) {
	s, root := newStore(t)
	if _, err := s.Create("default", "v", CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.SetLockTimeout(100 * time.Millisecond)
	release := holdStoreLock(t, root)
	defer release() // before the Cleanup that closes s, which enters too
	go s.Ping()
	for deadline := time.Now().Add(2 * time.Second); len(s.sem) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Ping never took the in-process lock")
		}
	}
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"ForgetPodCopyUp (RemovePodSandbox)", func() error { return s.ForgetPodCopyUp("pod1") }},
		{"ForgetPodCopyUps (Synchronize)", func() error { return s.ForgetPodCopyUps(func(string) bool { return true }) }},
		{"NeedsCopyUp (CreateContainer)", func() error { _, err := s.NeedsCopyUp("default", "v"); return err }},
	} {
		done := make(chan struct{})
		go func() { tc.op(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Errorf("%s still waiting after 3s with a lock timeout of 100ms", tc.name)
		}
	}
}
