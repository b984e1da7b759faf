package plugin

import (
	"path"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/volumes"
)

// FuzzParseVolumes checks that whatever a pod author writes, the parser
// either refuses it or returns items that are safe to act on: clean absolute
// targets outside the kernel filesystems, valid volume names, bounded tmpfs
// sizes and no two items on one target.
func FuzzParseVolumes(f *testing.F) {
	for _, seed := range []string{
		"- redis-data:/data", "- /cache:nocopy", "- /srv/x:/etc/app:ro",
		"- {type: tmpfs, target: /run/secrets, size: 16Mi, mode: '700'}",
		"- {source: v, target: /d, labels: {a: b}}", "[a:/a, /b]", "- ../../etc:/x",
		"- /proc/self/fd/3", "- {type: tmpfs, target: /x, size: '1Mi,exec'}", "a: &a [*a]",
		"- logs:/logs:U,noexec", "- /srv/x:/x:exec,ro", "- {source: v, target: /v, uid: 1000, gid: 1000, mode: '0770', chown: true, noExec: true}",
		"- {type: tmpfs, target: /t, noExec: true}", "- {target: /a, uid: -1, mode: 0770}", "- {type: bind, source: /s, target: /b, chown: true}",
		"- {source: v, target: /l, subpath: logs/app}", "- {source: v, target: /l, subpath: ../x}",
		"- {target: /l, subpath: a}", "- {type: bind, source: /srv, target: /l, subpath: a}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, value string) {
		items, err := ParseVolumes(VolumesKey, value, testTmpfs)
		if err != nil {
			if !strings.Contains(err.Error(), VolumesKey) {
				t.Fatalf("error %q does not name the annotation key", err)
			}
			return
		}
		seen := map[string]bool{}
		for _, it := range items {
			for _, id := range []*int{it.UID, it.GID} {
				if id != nil && (*id < 0 || *id > maxID) {
					t.Fatalf("id %d accepted from %q", *id, value)
				}
			}
			if it.DataMode != nil && *it.DataMode > 0o7777 {
				t.Fatalf("mode %o accepted from %q", *it.DataMode, value)
			}
			if it.Kind != KindVolume && (it.Chown || it.UID != nil || it.GID != nil || it.DataMode != nil) {
				t.Fatalf("%s item with an owner or chown accepted from %q", it.Kind, value)
			}
			if !path.IsAbs(it.Target) || path.Clean(it.Target) != it.Target || it.Target == "/" {
				t.Fatalf("unsafe target %q from %q", it.Target, value)
			}
			for _, f := range forbiddenTargets {
				if it.Target == f || strings.HasPrefix(it.Target, f+"/") {
					t.Fatalf("target %q under %s accepted", it.Target, f)
				}
			}
			if seen[it.Target] {
				t.Fatalf("two items on %q accepted", it.Target)
			}
			seen[it.Target] = true
			switch it.Kind {
			case KindVolume:
				if it.Source != "" && volumes.ValidateNamedVolume(it.Source) != nil {
					t.Fatalf("invalid volume name %q accepted", it.Source)
				}
				if it.Subpath != "" {
					if it.Source == "" {
						t.Fatalf("subpath %q of an anonymous volume accepted", it.Subpath)
					}
					if c, err := volumes.ValidateSubpath(it.Subpath); err != nil || c != it.Subpath || path.IsAbs(c) ||
						c == ".." || strings.HasPrefix(c, "../") || strings.Contains(c, "/../") || strings.HasSuffix(c, "/..") {
						t.Fatalf("unsafe subpath %q accepted", it.Subpath)
					}
				}
			case KindBind:
				if it.Subpath != "" {
					t.Fatalf("subpath %q of a bind mount accepted", it.Subpath)
				}
				if !path.IsAbs(it.Source) || path.Clean(it.Source) != it.Source {
					t.Fatalf("unclean bind source %q accepted", it.Source)
				}
			case KindTmpfs:
				if it.Size <= 0 || it.Size > testTmpfs.MaxSize || it.Mode > 0o7777 {
					t.Fatalf("tmpfs size %d mode %o accepted", it.Size, it.Mode)
				}
			default:
				t.Fatalf("unknown kind %q accepted", it.Kind)
			}
		}
	})
}
