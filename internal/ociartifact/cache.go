package ociartifact

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// BlobCache keeps the compressed blobs that pulls read, by digest, in one
// directory, so that the pulls of many volumes from one artifact or image
// download each blob once. A blob is downloaded whole into a temporary file,
// its digest checked, and renamed into place under its digest (a download
// stops at the size the manifest declares, which Fetch bounds); the pulls
// that want it meanwhile wait for that one download (one lock per digest,
// never held while a caller reads), then read the file. A hit is checked
// again before it is read: a file that does not match its name is removed
// and fetched again. The cache is bounded in bytes: after each download the
// least recently used blobs go until it fits (a blob being read stays
// readable through its open descriptor). Safe for concurrent use within one
// process; other processes do not share it.
type BlobCache struct {
	dir string
	max int64

	mu      sync.Mutex
	flights map[string]*sync.Mutex

	// Downloads and Hits count blobs fetched from a registry and read from
	// the cache.
	Downloads, Hits atomic.Int64
}

const blobTmpPrefix = ".tmp-"

// NewBlobCache opens the cache in dir, making it if needed, and removes the
// temporary files a process that died left: those no download holds a
// lock on, so that a cache opened again (a reload that changes the bound)
// leaves the downloads still running alone. maxBytes bounds what it keeps;
// 0 keeps nothing once read, and only concurrent pulls share a download.
func NewBlobCache(dir string, maxBytes int64) (*BlobCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	for _, n := range names {
		if strings.HasPrefix(n.Name(), blobTmpPrefix) {
			removeIfUnlocked(filepath.Join(dir, n.Name()))
		}
	}
	return &BlobCache{dir: dir, max: maxBytes, flights: map[string]*sync.Mutex{}}, nil
}

// Dir is the cache's directory.
func (c *BlobCache) Dir() string { return c.dir }

// MaxBytes is the cache's bound.
func (c *BlobCache) MaxBytes() int64 { return c.max }

func (c *BlobCache) flight(name string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	m, ok := c.flights[name]
	if !ok {
		m = &sync.Mutex{}
		c.flights[name] = m
	}
	return m
}

// open returns a reader of blob d, from the cache or fetched into it; a
// download stops past size bytes, the size its manifest declares.
func (c *BlobCache) open(d v1.Hash, size int64, fetch func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != 64 || strings.Trim(d.Hex, "0123456789abcdef") != "" {
		return nil, fmt.Errorf("%w: blob digest %q", ErrArtifact, d)
	}
	name := d.Algorithm + "-" + d.Hex
	path := filepath.Join(c.dir, name)
	lock := c.flight(name)
	lock.Lock()
	defer lock.Unlock()
	if f, err := openVerified(path, d.Hex); err == nil {
		now := time.Now()
		_ = os.Chtimes(path, now, now) // the LRU order
		c.Hits.Add(1)
		return f, nil
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: blob %s of %d bytes", ErrArtifact, d, size)
	}
	c.collect(size) // room for it, as far as the bound goes
	if err := c.download(d, size, path, fetch); err != nil {
		return nil, err
	}
	c.Downloads.Add(1)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	c.collect(0)
	return f, nil
}

func (c *BlobCache) download(d v1.Hash, size int64, path string, fetch func() (io.ReadCloser, error)) error {
	rc, err := fetch()
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := lockedTemp(c.dir)
	if err != nil {
		return fmt.Errorf("blob cache: %w", err)
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, sum), io.LimitReader(rc, size+1))
	if err == nil && n != size {
		err = fmt.Errorf("%w: blob %s is not of the %d bytes its manifest declares", ErrArtifact, d, size)
	}
	if err == nil && hex.EncodeToString(sum.Sum(nil)) != d.Hex {
		err = fmt.Errorf("%w: blob %s does not match its digest", ErrArtifact, d)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	// Closing drops the lock, once the file has its name or is gone.
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	return err
}

// lockedTemp creates a temporary file in dir and holds an exclusive flock
// on it while it is written: NewBlobCache removes only the temporary files
// nobody holds. One that a sweep removed between its creation and its lock
// is made again.
func lockedTemp(dir string) (*os.File, error) {
	for {
		f, err := os.CreateTemp(dir, blobTmpPrefix)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			_ = os.Remove(f.Name())
			return nil, err
		}
		fi, ferr := f.Stat()
		pi, perr := os.Stat(f.Name())
		if ferr == nil && perr == nil && os.SameFile(fi, pi) {
			return f, nil
		}
		f.Close()
		if ferr != nil {
			return nil, ferr
		}
	}
}

// removeIfUnlocked removes the temporary file at path unless a download
// holds its lock.
func removeIfUnlocked(path string) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		_ = os.Remove(path)
	}
}

// collect removes the least recently used blobs until the cache fits with
// reserve bytes more. The downloads under way count: they are on the disk
// too, and they are not removed.
func (c *BlobCache) collect(reserve int64) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type blob struct {
		name string
		size int64
		used time.Time
	}
	var blobs []blob
	total := reserve
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if strings.HasPrefix(e.Name(), blobTmpPrefix) {
			total += info.Size()
			continue
		}
		blobs = append(blobs, blob{e.Name(), info.Size(), info.ModTime()})
		total += info.Size()
	}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].used.Before(blobs[j].used) })
	for _, b := range blobs {
		if total <= c.max {
			return
		}
		if os.Remove(filepath.Join(c.dir, b.name)) == nil {
			total -= b.size
		}
	}
}

// openVerified opens the cached blob at path if it matches its digest,
// and removes it if it does not: a blob changed on disk is fetched again.
// The check reads the file once more, from the page cache mostly.
func openVerified(path, want string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.New()
	_, err = io.Copy(sum, f)
	if err == nil && hex.EncodeToString(sum.Sum(nil)) != want {
		err = fmt.Errorf("%w: cached blob sha256:%s does not match its digest", ErrArtifact, want)
		_ = os.Remove(path)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// cachedImage reads the layers of an image through a BlobCache.
type cachedImage struct {
	v1.Image
	c *BlobCache
}

func (c *BlobCache) wrap(img v1.Image) v1.Image {
	if c == nil {
		return img
	}
	return cachedImage{Image: img, c: c}
}

func (i cachedImage) Layers() ([]v1.Layer, error) {
	ls, err := i.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for n, l := range ls {
		if out[n], err = i.c.layer(l); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (i cachedImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := i.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return i.c.layer(l)
}

// layer is l read through the cache; its uncompressed content comes from
// the cached compressed blob.
func (c *BlobCache) layer(l v1.Layer) (v1.Layer, error) {
	return partial.CompressedToLayer(cachedBlob{l: l, c: c})
}

type cachedBlob struct {
	l v1.Layer
	c *BlobCache
}

func (b cachedBlob) Digest() (v1.Hash, error)            { return b.l.Digest() }
func (b cachedBlob) Size() (int64, error)                { return b.l.Size() }
func (b cachedBlob) MediaType() (types.MediaType, error) { return b.l.MediaType() }
func (b cachedBlob) Compressed() (io.ReadCloser, error) {
	d, err := b.l.Digest()
	if err != nil {
		return nil, err
	}
	size, err := b.l.Size()
	if err != nil {
		return nil, err
	}
	return b.c.open(d, size, b.l.Compressed)
}
