package main

import (
	"testing"
)

// TestReviewChownSurvivesLaterCopyUp: container A mounts a named volume with
// nocopy,U (the plugin passes --chown only), so the volume's root goes to A's
// user and volume.json records Chowned. Container B mounts it without nocopy
// over an image directory: _data is still empty and no copy-up is recorded,
// so the hook copies up and _data takes the image directory's owner. A's
// user has lost the volume, and Chowned stops the plugin from ever chowning
// it again.
func TestReviewChownSurvivesLaterCopyUp(t *testing.T) {
	e := newHookEnv(t)
	data := e.create(t, "default", "data")
	if err := e.run(t, "--chown", "default/data"); err != nil { // container A, user 1000
		t.Fatal(err)
	}
	if got := owner(t, data); got != "1000:1000 755" {
		t.Fatalf("after A's chown _data is %s", got)
	}
	if need, err := e.store.NeedsCopyUp("default", "data"); err != nil || !need {
		t.Fatalf("NeedsCopyUp after a chown-only hook = %v, %v (the plugin adds the hook when true)", need, err)
	}
	if err := e.run(t, "--volume", "default/data=/data"); err != nil { // container B
		t.Fatal(err)
	}
	if got := owner(t, data); got != "1000:1000 755" {
		t.Errorf("B's copy-up gave the chowned root (1000:1000) to the image's owner: %s", got)
	}
}
