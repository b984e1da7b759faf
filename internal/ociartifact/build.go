package ociartifact

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SplitOptions say where Build cuts the tar into layers; see Build.
type SplitOptions struct {
	// MinLayer is the size of tar a layer reaches before it may end at a
	// boundary entry; MaxLayer the size at which it ends anyway.
	MinLayer, MaxLayer int64
	// BigFile is the size from which a regular file gets a layer of its own.
	BigFile int64
	// BoundaryOneIn makes one entry name in about that many a boundary.
	BoundaryOneIn uint64
}

// SplitFor is the split with layers from minLayer to four times that, and
// files from minLayer alone.
func SplitFor(minLayer int64) SplitOptions {
	return SplitOptions{MinLayer: minLayer, MaxLayer: 4 * minLayer, BigFile: minLayer, BoundaryOneIn: 16}
}

// DefaultSplit suits volumes of many small files as well as a few big ones:
// layers of 16 to 64 MiB, so one changed file of a 1 GiB volume re-uploads
// about 2% of it.
var DefaultSplit = SplitFor(16 << 20)

// Layer is one built layer: a tar+gzip file on disk with its digests.
type Layer struct {
	Path      string
	Digest    string // of the compressed file, "sha256:..."
	Size      int64  // of the compressed file
	Info      LayerInfo
	file      *os.File
	gz        *gzip.Writer
	tw        *tar.Writer
	compSum   hash.Hash
	rawSum    hash.Hash
	compCount countWriter
	rawCount  countWriter
}

// Artifact is a built artifact: its layers in Dir, its config and manifest.
type Artifact struct {
	Dir    string
	Layers []*Layer
	Config Config
	// RawConf and Manifest are the config blob and the manifest as pushed;
	// Seal writes them from Config and Layers.
	RawConf  []byte
	Manifest []byte
}

// Meta is what Build records beside the data.
type Meta struct {
	Volume, Namespace string
	Labels            map[string]string
	Limit             int64
	Backend           string
	// Created is the RFC 3339 time for the manifest's annotation.
	Created string
}

// Build reads the tar r, such as the store's Export writes, and writes it
// again as deterministic layers into files in dir: headers normalized (PAX
// format, no access or change times, no user or group names; owners, modes,
// mtimes, xattrs and links as the data has them), gzip without name or time.
// So unchanged data gives the same digests, and a push uploads nothing new.
//
// The split is content-defined, as in deduplicating backup tools: entries
// come in the tar's order (the store's export is sorted and depth first); a
// layer ends after an entry whose name hashes to a boundary (one name in
// BoundaryOneIn) once the layer holds MinLayer bytes of tar, or at MaxLayer
// in any case; a regular file of BigFile or more is a layer of its own.
// Whether a name is a boundary depends on the name alone, so a change to
// one file, or an added or removed file, moves only the boundaries near it:
// the layers before and after keep their digests.
func Build(r io.Reader, dir string, meta Meta, opts SplitOptions) (*Artifact, error) {
	a := &Artifact{Dir: dir, Config: Config{Labels: meta.Labels, Limit: meta.Limit, Backend: meta.Backend, Mode: "0755"}}
	b := &builder{a: a, opts: opts}
	if err := b.run(tar.NewReader(r)); err != nil {
		b.abort()
		return nil, err
	}
	for _, l := range a.Layers {
		a.Config.Layers = append(a.Config.Layers, l.Info)
	}
	if err := a.Seal(meta); err != nil {
		return nil, err
	}
	return a, nil
}

type builder struct {
	a    *Artifact
	opts SplitOptions
	cur  *Layer
}

func (b *builder) run(tr *tar.Reader) error {
	sawRoot := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the volume's tar: %w", err)
		}
		normalize(hdr)
		if hdr.Name == "./" && !sawRoot {
			sawRoot = true
			b.a.Config.UID, b.a.Config.GID = hdr.Uid, hdr.Gid
			b.a.Config.Mode = fmt.Sprintf("%04o", hdr.Mode&0o7777)
		}
		big := hdr.Typeflag == tar.TypeReg && hdr.Size >= b.opts.BigFile
		if big {
			if err := b.cut(); err != nil {
				return err
			}
		}
		if err := b.write(hdr, tr); err != nil {
			return err
		}
		if big || b.cur.rawCount.n >= b.opts.MaxLayer ||
			b.cur.rawCount.n >= b.opts.MinLayer && boundary(hdr.Name, b.opts.BoundaryOneIn) {
			if err := b.cut(); err != nil {
				return err
			}
		}
	}
	if b.cur == nil && len(b.a.Layers) == 0 {
		return fmt.Errorf("%w: the volume's tar is empty", ErrArtifact)
	}
	return b.cut()
}

// normalize drops from hdr what changes without the data changing.
func normalize(hdr *tar.Header) {
	hdr.Format = tar.FormatPAX
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Uname, hdr.Gname = "", ""
	for k := range hdr.PAXRecords {
		if !strings.HasPrefix(k, "SCHILY.xattr.") {
			delete(hdr.PAXRecords, k)
		}
	}
	delete(hdr.PAXRecords, "")
}

// boundary says whether the entry name ends a layer (past MinLayer).
func boundary(name string, oneIn uint64) bool {
	if oneIn <= 1 {
		return true
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()%oneIn == 0
}

func (b *builder) write(hdr *tar.Header, r io.Reader) error {
	if b.cur == nil {
		l, err := b.newLayer()
		if err != nil {
			return err
		}
		b.cur = l
	}
	l := b.cur
	if err := l.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("entry %q: %w", hdr.Name, err)
	}
	if hdr.Typeflag == tar.TypeReg {
		n, err := io.Copy(l.tw, r)
		if err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
		l.Info.Bytes += n
		b.a.Config.Bytes += n
	}
	l.Info.Entries++
	b.a.Config.Entries++
	return nil
}

func (b *builder) newLayer() (*Layer, error) {
	f, err := os.Create(filepath.Join(b.a.Dir, "layer-"+strconv.Itoa(len(b.a.Layers))+".tar.gz"))
	if err != nil {
		return nil, err
	}
	l := &Layer{Path: f.Name(), file: f, compSum: sha256.New(), rawSum: sha256.New()}
	// Level and header fixed, no name and no time: same data, same bytes.
	// BestSpeed, as go-containerregistry compresses a layer: the default
	// level made push 5.5x slower than tar | crane append for a few percent
	// fewer bytes, and every push compresses the whole volume again.
	gz, err := gzip.NewWriterLevel(io.MultiWriter(f, l.compSum, &l.compCount), gzip.BestSpeed)
	if err != nil {
		f.Close()
		return nil, err
	}
	l.gz = gz
	l.tw = tar.NewWriter(io.MultiWriter(gz, l.rawSum, &l.rawCount))
	return l, nil
}

// cut ends the current layer, if any.
func (b *builder) cut() error {
	l := b.cur
	if l == nil {
		return nil
	}
	b.cur = nil
	b.a.Layers = append(b.a.Layers, l)
	err := errors.Join(l.tw.Close(), l.gz.Close(), l.file.Close())
	if err != nil {
		return fmt.Errorf("writing layer %d: %w", len(b.a.Layers)-1, err)
	}
	l.Digest = "sha256:" + hex.EncodeToString(l.compSum.Sum(nil))
	l.Size = l.compCount.n
	l.Info.DiffID = "sha256:" + hex.EncodeToString(l.rawSum.Sum(nil))
	l.Info.TarSize = l.rawCount.n
	return nil
}

func (b *builder) abort() {
	if b.cur != nil {
		b.cur.file.Close()
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
