package plugin

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

var testTmpfs = config.Tmpfs{DefaultSize: 64 << 20, MaxSize: 1 << 30}

func TestParseVolumes(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    []Item
		wantErr string
	}{
		{name: "named short", value: "- redis-data:/data",
			want: []Item{{Kind: KindVolume, Source: "redis-data", Target: "/data"}}},
		{name: "named short with options", value: "- redis-data:/data:ro,nocopy",
			want: []Item{{Kind: KindVolume, Source: "redis-data", Target: "/data", ReadOnly: true, NoCopy: true}}},
		{name: "anonymous short", value: "- /cache",
			want: []Item{{Kind: KindVolume, Target: "/cache"}}},
		{name: "anonymous short with options", value: "- /cache:nocopy",
			want: []Item{{Kind: KindVolume, Target: "/cache", NoCopy: true}}},
		{name: "bind short", value: "- /srv/conf:/etc/app:ro",
			want: []Item{{Kind: KindBind, Source: "/srv/conf", Target: "/etc/app", ReadOnly: true}}},
		{name: "target cleaned", value: "- v:/data/../data/",
			want: []Item{{Kind: KindVolume, Source: "v", Target: "/data"}}},
		{name: "flow list", value: `["a:/a", "/b"]`,
			want: []Item{{Kind: KindVolume, Source: "a", Target: "/a"}, {Kind: KindVolume, Target: "/b"}}},
		{name: "long named volume with a size", value: "- {source: db, target: /data, size: 10Gi}",
			want: []Item{{Kind: KindVolume, Source: "db", Target: "/data", Size: 10 << 30}}},
		{name: "long anonymous volume with a size", value: "- {target: /cache, size: 512Mi}",
			want: []Item{{Kind: KindVolume, Target: "/cache", Size: 512 << 20}}},
		{name: "long volume with labels", value: "- {source: redis-data, target: /data, labels: {app: redis}}",
			want: []Item{{Kind: KindVolume, Source: "redis-data", Target: "/data", Labels: map[string]string{"app": "redis"}}}},
		{name: "long tmpfs", value: "- type: tmpfs\n  target: /run/secrets\n  size: 16Mi\n  mode: \"700\"",
			want: []Item{{Kind: KindTmpfs, Target: "/run/secrets", Size: 16 << 20, Mode: 0o700}}},
		{name: "long tmpfs default size and mode", value: "- {type: tmpfs, target: /tmp}",
			want: []Item{{Kind: KindTmpfs, Target: "/tmp", Size: 64 << 20, Mode: 0o1777}}},
		{name: "long bind read-only", value: "- {type: bind, source: /srv/x/, target: /x, readOnly: true}",
			want: []Item{{Kind: KindBind, Source: "/srv/x", Target: "/x", ReadOnly: true}}},
		{name: "empty value", value: "", want: nil},
		{name: "short U, noexec and exec", value: "- logs:/logs:U,noexec\n- /cache:exec,ro\n- /bin-dir:noexec",
			want: []Item{{Kind: KindVolume, Source: "logs", Target: "/logs", Chown: true, NoExec: true},
				{Kind: KindVolume, Target: "/cache", ReadOnly: true}, {Kind: KindVolume, Target: "/bin-dir", NoExec: true}}},
		{name: "long ownership", value: "- {source: logs, target: /logs, uid: 1000, gid: 0, mode: '0770', chown: true, noExec: true}",
			want: []Item{{Kind: KindVolume, Source: "logs", Target: "/logs", UID: intp(1000), GID: intp(0), DataMode: modep(0o770), Chown: true, NoExec: true}}},
		{name: "long ownership of anonymous volume, mode unquoted", value: "- {target: /cache, uid: 5, mode: 750}",
			want: []Item{{Kind: KindVolume, Target: "/cache", UID: intp(5), DataMode: modep(0o750)}}},
		{name: "tmpfs noexec", value: "- {type: tmpfs, target: /t, noExec: true}",
			want: []Item{{Kind: KindTmpfs, Target: "/t", Size: 64 << 20, Mode: 0o1777, NoExec: true}}},
		{name: "bind noexec", value: "- {type: bind, source: /srv, target: /x, noExec: true}",
			want: []Item{{Kind: KindBind, Source: "/srv", Target: "/x", NoExec: true}}},
		{name: "subpath of a named volume", value: "- {source: data, target: /logs, subpath: ./logs//app/, readOnly: true}",
			want: []Item{{Kind: KindVolume, Source: "data", Target: "/logs", Subpath: "logs/app", ReadOnly: true}}},
		{name: "cloneOf a snapshot, named and anonymous", value: "- {source: ci-db, target: /db, cloneOf: golden@v1}\n- {target: /scratch, cloneOf: golden}",
			want: []Item{{Kind: KindVolume, Source: "ci-db", Target: "/db", CloneOf: &volumes.CloneSource{Volume: "golden", Snapshot: "v1"}},
				{Kind: KindVolume, Target: "/scratch", CloneOf: &volumes.CloneSource{Volume: "golden"}}}},

		{name: "malformed yaml", value: "- [a", wantErr: "not a YAML list"},
		{name: "not a list", value: "a: b", wantErr: "not a YAML list of volumes"},
		{name: "relative target", value: "- v:data", wantErr: `target "data" is not an absolute path`},
		{name: "target slash", value: "- v:/", wantErr: "target cannot be /"},
		{name: "target proc", value: "- /proc/self/fd/3", wantErr: "is under /proc"},
		{name: "target sys", value: "- v:/sys/x", wantErr: "is under /sys"},
		{name: "target dev", value: "- {type: tmpfs, target: /dev}", wantErr: "is under /dev"},
		{name: "target dotdot to proc", value: "- /x/../proc", wantErr: "is under /proc"},
		{name: "name dotdot", value: "- ../../etc:/x", wantErr: `volume name "../../etc"`},
		{name: "name with slash in long", value: "- {source: a/b, target: /x}", wantErr: `volume name "a/b"`},
		{name: "name dot", value: "- .:/x", wantErr: `volume name "."`},
		{name: "name too long", value: "- " + strings.Repeat("a", 300) + ":/x", wantErr: "volume name"},
		{name: "name of an anonymous volume's shape", value: "- " + strings.Repeat("0f", 32) + ":/x", wantErr: "shape of anonymous volume names"},
		{name: "name of an anonymous volume's shape in long syntax", value: "- {source: " + strings.Repeat("AB", 32) + ", target: /x}", wantErr: "shape of anonymous volume names"},
		{name: "name with newline", value: `- "a\nb:/x"`, wantErr: "volume name"},
		{name: "duplicate target", value: "- a:/data\n- /data/", wantErr: `target "/data" is already used by item 1`},
		{name: "unknown option", value: "- a:/data:suid", wantErr: `unknown option "suid"`},
		{name: "ro and rw", value: "- a:/data:ro,rw", wantErr: "contradict"},
		{name: "noexec and exec", value: "- a:/data:noexec,exec", wantErr: "options noexec and exec contradict"},
		{name: "lowercase u", value: "- a:/data:u", wantErr: `unknown option "u"`},
		{name: "suid not offered", value: "- {type: tmpfs, target: /x, suid: true}", wantErr: `unknown field "suid"`},
		{name: "U on bind", value: "- /srv:/x:U", wantErr: "U (chown) does not apply to bind mounts"},
		{name: "chown on bind", value: "- {type: bind, source: /srv, target: /x, chown: true}", wantErr: "only for volumes"},
		{name: "uid on bind", value: "- {type: bind, source: /srv, target: /x, uid: 1}", wantErr: "only for volumes"},
		{name: "uid on tmpfs", value: "- {type: tmpfs, target: /x, uid: 1}", wantErr: "a tmpfs takes no"},
		{name: "negative uid", value: "- {source: v, target: /x, uid: -1}", wantErr: "uid -1"},
		{name: "uid too large", value: "- {source: v, target: /x, gid: 4294967295}", wantErr: "gid 4294967295"},
		{name: "uid not a number", value: "- {source: v, target: /x, uid: root}", wantErr: "uid"},
		{name: "volume mode not octal", value: "- {source: v, target: /x, mode: '0799'}", wantErr: "mode"},
		{name: "volume mode too large", value: "- {source: v, target: /x, mode: '17777'}", wantErr: "mode"},
		{name: "mode with leading zero unquoted", value: "- {source: v, target: /x, mode: 0770}", wantErr: `item 1: mode 0770: quote it ("0770")`},
		{name: "too many colons", value: "- a:/b:ro:x", wantErr: "want [SOURCE:]TARGET"},
		{name: "unknown type", value: "- {type: nfs, target: /x}", wantErr: `unknown type "nfs"`},
		{name: "unknown key", value: "- {target: /x, readonly: true, sizee: 1}", wantErr: `unknown field "sizee"`},
		{name: "tmpfs above max", value: "- {type: tmpfs, target: /x, size: 2Gi}", wantErr: "above the maximum 1Gi"},
		{name: "tmpfs size zero", value: "- {type: tmpfs, target: /x, size: 0}", wantErr: "must be positive"},
		{name: "tmpfs size negative", value: "- {type: tmpfs, target: /x, size: -1Mi}", wantErr: `size "-1Mi"`},
		{name: "tmpfs size injected options", value: "- {type: tmpfs, target: /x, size: '1Mi,exec,suid'}", wantErr: `size "1Mi,exec,suid"`},
		{name: "tmpfs huge size", value: "- {type: tmpfs, target: /x, size: 99999999999999Ti}", wantErr: "too large"},
		{name: "tmpfs bad mode", value: "- {type: tmpfs, target: /x, mode: '1777,exec'}", wantErr: "tmpfs mode"},
		{name: "tmpfs with source", value: "- {type: tmpfs, source: x, target: /x}", wantErr: "takes no source"},
		{name: "size on bind", value: "- {type: bind, source: /srv, target: /x, size: 1Mi}", wantErr: "size is only for types volume and tmpfs"},
		{name: "volume size zero", value: "- {source: v, target: /x, size: 0}", wantErr: "volume size 0 must be positive"},
		{name: "volume size injected", value: "- {target: /x, size: '1Mi,exec'}", wantErr: `size "1Mi,exec"`},
		{name: "relative bind source", value: "- {type: bind, source: srv, target: /x}", wantErr: "not an absolute host path"},
		{name: "volume with path source", value: "- {source: /srv, target: /x}", wantErr: "use type bind"},
		{name: "labels on anonymous", value: "- {target: /x, labels: {a: b}}", wantErr: "labels are only for named volumes"},
		{name: "nocopy on bind", value: "- /srv:/x:nocopy", wantErr: "nocopy does not apply"},
		{name: "no target", value: "- {source: v}", wantErr: "no target"},
		{name: "too large", value: "- " + strings.Repeat("a", 70<<10) + ":/x", wantErr: "more than the 65536 allowed"},
		{name: "deep nesting", value: strings.Repeat("[", 50) + strings.Repeat("]", 50), wantErr: "levels allowed"},
		{name: "alias bomb", value: aliasBomb(), wantErr: "anchors and aliases are not allowed"},
		{name: "duplicate key", value: "- {target: /a, target: /etc}", wantErr: `key "target" already set`},
		{name: "NUL byte", value: "- \"a\x00:/x\"", wantErr: "NUL"},
		{name: "subpath of an anonymous volume", value: "- {target: /x, subpath: logs}", wantErr: `subpath "logs": a subpath is only for named volumes`},
		{name: "subpath of a bind mount", value: "- {type: bind, source: /srv, target: /x, subpath: logs}", wantErr: "only for named volumes"},
		{name: "subpath of a tmpfs", value: "- {type: tmpfs, target: /x, subpath: logs}", wantErr: "subpath"},
		{name: "subpath absolute", value: "- {source: v, target: /x, subpath: /etc}", wantErr: `subpath "/etc"`},
		{name: "subpath dotdot", value: "- {source: v, target: /x, subpath: logs/../../x}", wantErr: `must not contain ".."`},
		{name: "subpath of the volume itself", value: "- {source: v, target: /x, subpath: ./}", wantErr: "names the volume itself"},
		{name: "chown with a subpath", value: "- {source: v, target: /x, subpath: logs, chown: true}", wantErr: `item 1 (target "/x"): chown with subpath "logs"`},
		{name: "cloneOf on a tmpfs", value: "- {type: tmpfs, target: /x, cloneOf: golden}", wantErr: "cloneOf"},
		{name: "cloneOf on a bind", value: "- {type: bind, source: /srv, target: /x, cloneOf: golden}", wantErr: `cloneOf "golden": cloneOf is only for volumes`},
		{name: "cloneOf of another namespace", value: "- {target: /x, cloneOf: shop/golden}", wantErr: `cloneOf "shop/golden": want NAME or NAME@SNAP, a volume of the pod's namespace`},
		{name: "cloneOf of an anonymous volume's name", value: "- {target: /x, cloneOf: " + strings.Repeat("ab", 32) + "}", wantErr: "shape of anonymous volume names"},
		{name: "cloneOf with a bad snapshot", value: "- {target: /x, cloneOf: 'golden@'}", wantErr: `cloneOf "golden@": snapshot name ""`},
		{name: "cloneOf with a size", value: "- {target: /x, cloneOf: golden, size: 1Gi}", wantErr: "a clone has its source's size"},
		{name: "cloneOf of itself", value: "- {source: golden, target: /x, cloneOf: golden}", wantErr: "a clone of itself"},
		{name: "subpath with a newline", value: "- {source: v, target: /x, subpath: \"a\\nb\"}", wantErr: "newline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVolumes(VolumesKey+"/pod", tt.value, testTmpfs)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseVolumes() = %+v, want error %q", got, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) ||
					!strings.Contains(err.Error(), VolumesKey+"/pod") {
					t.Fatalf("ParseVolumes() error = %q, want it to name the key and contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseVolumes() error = %v", err)
			}
			for i := range got {
				got[i].Desc = ""
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseVolumes() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// aliasBomb is a billion-laughs document: small, but expanding to billions of nodes.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n")
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		b.WriteString(n + ": &" + n + " [*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + "]\n")
		prev = n
	}
	return b.String()
}

func TestParseItemErrorNamesItem(t *testing.T) {
	_, err := ParseVolumes("volumes.noderesource.dev/container.app", "- a:/a\n- ../x:/b", testTmpfs)
	if err == nil || !strings.Contains(err.Error(), `item 2 ("../x:/b")`) {
		t.Fatalf("error %v does not name the item", err)
	}
}

func TestParseImageVolumeMode(t *testing.T) {
	for _, v := range []string{"volume", "tmpfs", "ignore"} {
		if m, err := ParseImageVolumeMode(ImageVolumesKey, v); err != nil || string(m) != v {
			t.Errorf("ParseImageVolumeMode(%q) = %q, %v", v, m, err)
		}
	}
	if _, err := ParseImageVolumeMode(ImageVolumesKey+"/pod", "bind"); err == nil || !strings.Contains(err.Error(), ImageVolumesKey+"/pod") {
		t.Errorf("bad mode error = %v", err)
	}
}
