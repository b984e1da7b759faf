package hook

import (
	"reflect"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// TestCopyUpArgsRoundTrip checks that what the plugin writes is what the
// hook reads.
func TestCopyUpArgsRoundTrip(t *testing.T) {
	web := volumes.VolumeRef{Namespace: "default", Name: "web"}
	logs := volumes.VolumeRef{Namespace: "k8s.io", Name: "logs"}
	for name, a := range map[string]CopyUpArgs{
		"chown only": {Root: "/var/lib/nri-volumes", Chowns: []volumes.VolumeRef{web}},
		"all": {
			Root: "/var/lib/nri-volumes", MaxBytes: 1 << 30, MaxFiles: 1000,
			ImageHex: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			Pod:      "pod-1", PodMaxBytes: 2 << 30, LogLevel: "debug",
			CopyUps:    []volumes.CopyUpSpec{{VolumeRef: web, Target: "/data"}, {VolumeRef: logs, Target: "/var/log"}},
			KeepOwners: []volumes.VolumeRef{web},
			Chowns:     []volumes.VolumeRef{logs},
			Syncs:      []volumes.VolumeRef{web, logs},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseCopyUpArgs(a.Argv())
			if err != nil {
				t.Fatalf("ParseCopyUpArgs(%q): %v", a.Argv(), err)
			}
			if !reflect.DeepEqual(got, a) {
				t.Fatalf("round trip of %q:\n got %+v\nwant %+v", a.Argv(), got, a)
			}
		})
	}
}
