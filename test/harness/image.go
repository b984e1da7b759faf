package harness

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Image describes a one-layer OCI image: busybox (from the host's static
// /bin/busybox, with a link for each applet) plus Files, and the config
// fields that nri-volumes reads.
type Image struct {
	// Name is the full reference, e.g. "localhost/app:e2e".
	Name       string
	Files      []File
	Volumes    []string
	Entrypoint []string
	Cmd        []string
	User       string
	WorkingDir string
	Env        []string
}

// File is one entry of an image layer. Parent directories that no File
// names are made root-owned with mode 0755.
type File struct {
	Path string
	// Mode holds the permission bits, with setuid, setgid and sticky
	// given as fs.Mode* flags or as plain octal (0o1777);
	// zero means 0644 for a file and 0755 for a directory.
	Mode     fs.FileMode
	UID, GID int
	Content  string
	// Dir makes a directory; Link, when set, makes a symlink to it.
	Dir  bool
	Link string
}

// RegularFile returns a File with content.
func RegularFile(p, content string, mode fs.FileMode, uid, gid int) File {
	return File{Path: p, Content: content, Mode: mode, UID: uid, GID: gid}
}

// Directory returns a directory File.
func Directory(p string, mode fs.FileMode, uid, gid int) File {
	return File{Path: p, Dir: true, Mode: mode, UID: uid, GID: gid}
}

// Symlink returns a symlink File.
func Symlink(p, target string) File {
	return File{Path: p, Link: target}
}

// BusyboxPath is the static busybox that images are made from; Debian's
// busybox-static package installs it.
const BusyboxPath = "/bin/busybox"

// BuiltImage is an image archive written to disk.
type BuiltImage struct {
	Name string
	// Archive is the OCI image layout tar.
	Archive string
	// ConfigDigest is the image config's digest ("sha256:...").
	ConfigDigest string
}

// modTime is fixed so that an image's digests depend on its content only.
var modTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Build writes the image as an OCI image layout tar into dir.
func (img Image) Build(dir string) (*BuiltImage, error) {
	layer, diffID, err := img.layer()
	if err != nil {
		return nil, err
	}
	layerDigest := digest(layer)

	volumes := map[string]struct{}{}
	for _, v := range img.Volumes {
		volumes[v] = struct{}{}
	}
	cfg := map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      modTime.Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Volumes":    volumes,
			"User":       img.User,
			"WorkingDir": img.WorkingDir,
			"Env":        append([]string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin"}, img.Env...),
		},
		"rootfs": map[string]any{
			"type":     "layers",
			"diff_ids": []string{diffID},
		},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", cfgJSON),
		"layers": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
			"digest":    layerDigest,
			"size":      len(layer),
		}},
	})
	if err != nil {
		return nil, err
	}
	_, tag, _ := strings.Cut(path.Base(img.Name), ":")
	manifestDesc := descriptor("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc["annotations"] = map[string]string{
		"io.containerd.image.name":          img.Name,
		"org.opencontainers.image.ref.name": tag,
	}
	manifestDesc["platform"] = map[string]string{"architecture": runtime.GOARCH, "os": "linux"}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{manifestDesc},
	})
	if err != nil {
		return nil, err
	}

	f, err := os.CreateTemp(dir, "image-*.tar")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: modTime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, e := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(digest(cfgJSON)), cfgJSON},
		{blobPath(digest(manifest)), manifest},
		{blobPath(layerDigest), layer},
	} {
		if err := put(e.name, e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &BuiltImage{Name: img.Name, Archive: f.Name(), ConfigDigest: digest(cfgJSON)}, nil
}

// layer returns the gzipped layer tar and the digest of the uncompressed one.
func (img Image) layer() (gz []byte, diffID string, err error) {
	entries, err := img.entries()
	if err != nil {
		return nil, "", err
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, "", fmt.Errorf("layer entry %s: %w", e.hdr.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return out.Bytes(), digest(raw.Bytes()), nil
}

type layerEntry struct {
	hdr  *tar.Header
	data []byte
}

// entries lists the layer's entries, parents before children; a File
// replaces a base entry at the same path.
func (img Image) entries() ([]layerEntry, error) {
	bb, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("read %s (install busybox-static): %w", BusyboxPath, err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", BusyboxPath, err)
	}
	byPath := map[string]layerEntry{}
	add := func(f File) {
		p := strings.Trim(path.Clean("/"+f.Path), "/")
		if p == "" {
			return
		}
		hdr := &tar.Header{Name: p, Uid: f.UID, Gid: f.GID, ModTime: modTime, Format: tar.FormatPAX}
		var data []byte
		switch {
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		case f.Dir:
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, p+"/", tarMode(f.Mode, 0o755)
		default:
			data = []byte(f.Content)
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, tarMode(f.Mode, 0o644), int64(len(data))
		}
		byPath[p] = layerEntry{hdr: hdr, data: data}
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "run", "sys", "usr", "var"} {
		add(Directory(d, 0o755, 0, 0))
	}
	add(Directory("tmp", 0o1777, 0, 0))
	add(File{Path: "bin/busybox", Content: string(bb), Mode: 0o755})
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			add(Symlink("bin/"+applet, "busybox"))
		}
	}
	add(RegularFile("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:999:999:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644, 0, 0))
	add(RegularFile("etc/group", "root:x:0:\napp:x:999:\nnogroup:x:65534:\n", 0o644, 0, 0))
	for _, f := range img.Files {
		add(f)
	}
	// Parents that nothing names.
	for p := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := byPath[dir]; !ok {
				add(Directory(dir, 0o755, 0, 0))
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths) // a parent sorts before its children
	entries := make([]layerEntry, 0, len(paths))
	for _, p := range paths {
		entries = append(entries, byPath[p])
	}
	return entries, nil
}

func tarMode(m, def fs.FileMode) int64 {
	if m == 0 {
		m = def
	}
	// Plain octal bits (0o1777) are accepted as well as fs.Mode* flags.
	mode := int64(m.Perm()) | int64(m&0o7000)
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(d string) string {
	return "blobs/sha256/" + strings.TrimPrefix(d, "sha256:")
}

func descriptor(mediaType string, data []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(data), "size": len(data)}
}
