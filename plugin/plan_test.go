package plugin

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/nri/pkg/api"
	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/volumes"
)

func TestMakePlan(t *testing.T) {
	hostDir := t.TempDir()
	allowed := filepath.Join(hostDir, "allowed")
	cfg := config.Default()
	cfg.Root = filepath.Join(hostDir, "store")
	cfg.BindMounts.AllowedHostPaths = []string{allowed}
	noBinds := config.Default()
	rwBinds := *cfg
	rwBinds.BindMounts.ReadWrite = true
	sized := *cfg
	sized.Sizes = config.Sizes{Backend: "auto", DefaultSize: 1 << 30, MaxSize: 16 << 30}

	criVolume := &api.Mount{Destination: "/data", Type: "bind", Source: "/var/lib/containerd/io.containerd.grpc.v1.cri/containers/c1/volumes/abc"}
	k8sMount := &api.Mount{Destination: "/config", Type: "bind", Source: "/var/lib/kubelet/pods/x/volumes/cm"}
	owner := func(target string) *volumes.Owner {
		return &volumes.Owner{PodSandboxID: "pod1", PodName: "web", Container: "app", Target: target}
	}
	items := func(value string) []Item {
		t.Helper()
		it, err := ParseVolumes(VolumesKey, value, cfg.Tmpfs)
		if err != nil {
			t.Fatal(err)
		}
		return it
	}

	tests := []struct {
		name       string
		cfg        *config.Config
		req        CreateRequest
		wantVols   []volumes.Request
		wantMounts []string // "kind target source-or-volume-index options copyup"
		wantRemove []string
		wantErr    string
	}{
		{name: "nothing", cfg: cfg, req: CreateRequest{ImageMode: config.ImageVolumeAnonymous}},
		{name: "named and anonymous and tmpfs", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous,
			Items:     items("- redis-data:/data\n- /cache:nocopy\n- {type: tmpfs, target: /run/secrets, size: 16Mi, mode: '700'}\n- redis-data:/backup:ro"),
		}, wantVols: []volumes.Request{
			{Namespace: "shop", Name: "redis-data"},
			{Namespace: "shop", Owner: owner("/cache")},
		}, wantMounts: []string{
			"volume /data 0 rbind,rprivate,nosuid,nodev,rw true",
			"volume /cache 1 rbind,rprivate,nosuid,nodev,rw false",
			"volume /backup 0 rbind,rprivate,nosuid,nodev,ro,rro true",
			"tmpfs /run/secrets  nosuid,nodev,mode=700,size=16777216,nr_inodes=4096,rw false",
		}},
		{name: "image volume replaces containerd's own", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/data"}, Mounts: []*api.Mount{criVolume},
		}, wantVols: []volumes.Request{{Namespace: "shop", Owner: owner("/data")}},
			wantMounts: []string{"volume /data 0 rbind,rprivate,nosuid,nodev,rw true"},
			wantRemove: []string{"/data"}},
		{name: "image volume as tmpfs", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeTmpfs, ImageVolumes: []string{"/data/"},
		}, wantMounts: []string{"tmpfs /data  nosuid,nodev,mode=1777,size=67108864,nr_inodes=16384,rw,tmpcopyup false"}},
		{name: "image volume ignored still drops containerd's", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeIgnore, ImageVolumes: []string{"/data"}, Mounts: []*api.Mount{criVolume},
		}, wantRemove: []string{"/data"}},
		{name: "annotation wins over image volume", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/data"}, Items: items("- db:/data:nocopy"),
		}, wantVols: []volumes.Request{{Namespace: "shop", Name: "db"}},
			wantMounts: []string{"volume /data 0 rbind,rprivate,nosuid,nodev,rw false"}},
		{name: "kubernetes mount wins over image volume", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/config"}, Mounts: []*api.Mount{k8sMount},
		}},
		{name: "parents mounted first", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/data"}, Items: items("- /data/cache/x:nocopy"),
		}, wantVols: []volumes.Request{{Namespace: "shop", Owner: owner("/data/cache/x")}, {Namespace: "shop", Owner: owner("/data")}},
			wantMounts: []string{"volume /data 1 rbind,rprivate,nosuid,nodev,rw true", "volume /data/cache/x 0 rbind,rprivate,nosuid,nodev,rw false"}},
		{name: "bind read-only by default", cfg: cfg, req: CreateRequest{Items: items("- " + allowed + "/conf:/etc/app")},
			wantMounts: []string{"bind /etc/app " + allowed + "/conf rbind,rprivate,nosuid,nodev,rnosuid,rnodev,ro,rro false"}},
		{name: "bind writable when configured", cfg: &rwBinds, req: CreateRequest{Items: items("- " + allowed + "/conf:/etc/app")},
			wantMounts: []string{"bind /etc/app " + allowed + "/conf rbind,rprivate,nosuid,nodev,rnosuid,rnodev,rw false"}},
		{name: "user namespace idmaps volumes and binds, not tmpfs", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/var/lib/db"}, UserNS: true,
			Items: items("- shared:/shared\n- " + allowed + "/conf:/etc/app\n- {type: tmpfs, target: /run/secrets}"),
		}, wantVols: []volumes.Request{{Namespace: "shop", Name: "shared"}, {Namespace: "shop", Owner: owner("/var/lib/db")}},
			wantMounts: []string{
				"volume /shared 0 rbind,rprivate,nosuid,nodev,rw,ridmap true",
				"bind /etc/app " + allowed + "/conf rbind,rprivate,nosuid,nodev,rnosuid,rnodev,ro,rro,ridmap false",
				"tmpfs /run/secrets  nosuid,nodev,mode=1777,size=67108864,nr_inodes=16384,rw false",
				"volume /var/lib/db 1 rbind,rprivate,nosuid,nodev,rw,ridmap true",
			}},
		{name: "noexec on every kind", cfg: cfg, req: CreateRequest{Items: items("- v:/v:noexec\n- /a:ro,noexec,nocopy\n- " + allowed +
			"/conf:/etc/app:noexec\n- {type: tmpfs, target: /t, noExec: true}\n- {source: w, target: /w, noExec: true}\n- x:/x:exec")},
			wantVols: []volumes.Request{{Namespace: "shop", Name: "v"}, {Namespace: "shop", Owner: owner("/a")}, {Namespace: "shop", Name: "w"}, {Namespace: "shop", Name: "x"}},
			wantMounts: []string{
				"volume /v 0 rbind,rprivate,nosuid,nodev,rw,noexec true",
				"volume /a 1 rbind,rprivate,nosuid,nodev,ro,rro,noexec false",
				"tmpfs /t  nosuid,nodev,mode=1777,size=67108864,nr_inodes=16384,rw,noexec false",
				"volume /w 2 rbind,rprivate,nosuid,nodev,rw,noexec true",
				"volume /x 3 rbind,rprivate,nosuid,nodev,rw true",
				"bind /etc/app " + allowed + "/conf rbind,rprivate,nosuid,nodev,rnosuid,rnodev,ro,rro,noexec false",
			}},
		{name: "ownership of volumes made on first use", cfg: cfg, req: CreateRequest{
			Items: items("- {source: logs, target: /logs, uid: 1000, gid: 2000, mode: '0770', chown: true}\n- /cache:U"),
		}, wantVols: []volumes.Request{
			{Namespace: "shop", Name: "logs", CreateOptions: volumes.CreateOptions{UID: intp(1000), GID: intp(2000), Mode: modep(0o770)}},
			{Namespace: "shop", Owner: owner("/cache")},
		}, wantMounts: []string{
			"volume /logs 0 rbind,rprivate,nosuid,nodev,rw true chown",
			"volume /cache 1 rbind,rprivate,nosuid,nodev,rw true chown",
		}},
		{name: "subpath of a named volume", cfg: cfg, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/logs"},
			Items: items("- {source: data, target: /logs, subpath: logs/app/}\n- data:/data"),
		}, wantVols: []volumes.Request{{Namespace: "shop", Name: "data"}},
			wantMounts: []string{"volume /logs 0 rbind,rprivate,nosuid,nodev,rw false logs/app", "volume /data 0 rbind,rprivate,nosuid,nodev,rw true"}},

		{name: "sized volumes", cfg: &sized, req: CreateRequest{
			ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/img"},
			Items: items("- {source: db, target: /data, size: 10Gi}\n- /cache\n- {target: /big, size: 8Gi}\n- unsized:/u"),
		}, wantVols: []volumes.Request{
			{Namespace: "shop", Name: "db", CreateOptions: volumes.CreateOptions{Size: 10 << 30}},
			{Namespace: "shop", Owner: owner("/cache"), CreateOptions: volumes.CreateOptions{Size: 1 << 30}},
			{Namespace: "shop", Owner: owner("/big"), CreateOptions: volumes.CreateOptions{Size: 8 << 30}},
			{Namespace: "shop", Name: "unsized"},
			{Namespace: "shop", Owner: owner("/img"), CreateOptions: volumes.CreateOptions{Size: 1 << 30}},
		}, wantMounts: []string{
			"volume /data 0 rbind,rprivate,nosuid,nodev,rw true",
			"volume /cache 1 rbind,rprivate,nosuid,nodev,rw true",
			"volume /big 2 rbind,rprivate,nosuid,nodev,rw true",
			"volume /u 3 rbind,rprivate,nosuid,nodev,rw true",
			"volume /img 4 rbind,rprivate,nosuid,nodev,rw true",
		}},
		{name: "size above sizes.maxSize", cfg: &sized, req: CreateRequest{Items: items("- {source: db, target: /data, size: 20Gi}")},
			wantErr: `item 1 (target "/data"): size 20Gi is above sizes.maxSize 16Gi`},

		{name: "annotation target a runtime mount has", cfg: cfg, req: CreateRequest{Items: items("- v:/config"), Mounts: []*api.Mount{k8sMount}},
			wantErr: `target "/config" is already mounted`},
		{name: "bind with empty allowlist", cfg: noBinds, req: CreateRequest{Items: items("- /srv:/x")},
			wantErr: "bind mounts are not allowed"},
		{name: "image volume under proc", cfg: cfg, req: CreateRequest{ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"/proc/x"}, Image: "evil"},
			wantErr: `image "evil" declares VOLUME "/proc/x"`},
		{name: "relative image volume", cfg: cfg, req: CreateRequest{ImageMode: config.ImageVolumeAnonymous, ImageVolumes: []string{"data"}, Image: "evil"},
			wantErr: "not an absolute path"},
		{name: "too many volumes", cfg: cfg, req: CreateRequest{ImageMode: config.ImageVolumeAnonymous, ImageVolumes: manyTargets(65)},
			wantErr: "more than the 64 allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Namespace, req.PodName, req.PodSandboxID, req.ContainerID, req.ContainerName = "shop", "web", "pod1", "c1", "app"
			req.ItemsKey = VolumesKey
			plan, err := MakePlan(tt.cfg, &req)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("MakePlan() error = %v, want %q", err, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v is not ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("MakePlan() error = %v", err)
			}
			if !reflect.DeepEqual(plan.Volumes, tt.wantVols) {
				t.Errorf("volumes = %+v, want %+v", plan.Volumes, tt.wantVols)
			}
			var mounts []string
			for _, m := range plan.Mounts {
				ref := m.Source
				if m.Kind == KindVolume {
					ref = string(rune('0' + m.Volume))
				}
				desc := strings.Join([]string{string(m.Kind), m.Target, ref, strings.Join(m.Options, ","), boolString(m.CopyUp)}, " ")
				if m.Chown {
					desc += " chown"
				}
				if m.Subpath != "" {
					desc += " " + m.Subpath
				}
				mounts = append(mounts, desc)
			}
			if !reflect.DeepEqual(mounts, tt.wantMounts) {
				t.Errorf("mounts =\n%s\nwant\n%s", strings.Join(mounts, "\n"), strings.Join(tt.wantMounts, "\n"))
			}
			if !reflect.DeepEqual(plan.Remove, tt.wantRemove) {
				t.Errorf("remove = %v, want %v", plan.Remove, tt.wantRemove)
			}
		})
	}
}

func manyTargets(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, "/v"+strings.Repeat("x", i))
	}
	return out
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func intp(n int) *int { return &n }

func modep(m uint32) *uint32 { return &m }
