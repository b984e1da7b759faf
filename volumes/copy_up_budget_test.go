package volumes

import "testing"

// TestPodCopyUpMaxBytes bounds a copy-up by the lower of the volume's limit
// and what is left of the pod's budget, and by no bytes once that is used up.
func TestPodCopyUpMaxBytes(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		maxBytes, podMax, used int64
		want                   int64
		byPod                  bool
	}{
		{name: "no pod budget", maxBytes: 100, want: 100},
		{name: "neither bound", want: 0},
		{name: "volume limit lower", maxBytes: 100, podMax: 1000, used: 500, want: 100},
		{name: "volume limit equal to what is left", maxBytes: 100, podMax: 1000, used: 900, want: 100},
		{name: "pod budget lower", maxBytes: 100, podMax: 1000, used: 950, want: 50, byPod: true},
		{name: "pod budget only", podMax: 1000, used: 400, want: 600, byPod: true},
		{name: "pod budget used up", maxBytes: 100, podMax: 1000, used: 1000, want: -1, byPod: true},
		{name: "pod budget overrun", podMax: 1000, used: 1200, want: -1, byPod: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, byPod := PodCopyUpMaxBytes(tc.maxBytes, tc.podMax, tc.used)
			if got != tc.want || byPod != tc.byPod {
				t.Errorf("PodCopyUpMaxBytes(%d, %d, %d) = %d, %v; want %d, %v", tc.maxBytes, tc.podMax, tc.used, got, byPod, tc.want, tc.byPod)
			}
		})
	}
}
