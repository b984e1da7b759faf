package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sirupsen/logrus"

	"github.com/nri-volumes/nri-volumes/config"
	"github.com/nri-volumes/nri-volumes/internal/ociartifact"
	"github.com/nri-volumes/nri-volumes/volumes"
)

// Seeding volumes from a registry (long syntax from: REF, fromPath: /path).
//
// The pull never runs inside an NRI request: a registry that is slow or
// far must not get the plugin dropped by containerd. CreateContainer starts
// it in the background (one per volume, whatever the number of containers
// that ask), waits for it no longer than a quarter of lockTimeout, and
// fails with ErrBusy when it is not done by then; the pull goes on, and
// kubelet's retry of the creation finds the volume seeded, as it finds a
// sized volume formatted (volumes/format.go). The volume exists from the
// pull's start, held out of containers by the store's import marker
// (volumes.Seeds.Create), so a half pull is never taken for a whole
// one, by this plugin or by one that restarts; a failed pull removes it and
// fails the next creation with a message that names the reference and the
// reason.

// Seed is where a volume made on first use takes its data from.
type Seed struct {
	// Ref is the reference in full form (HOST/REPOSITORY:TAG or @DIGEST),
	// as the policy (registries.allow) matches it.
	Ref string
	// Path, when set, makes the volume from that directory of an ordinary
	// container image; otherwise Ref is an artifact that volume push wrote.
	Path string
}

// pullWaitShare is the part of lockTimeout that CreateContainer waits for
// its seeding pulls, leaving the rest to the store's lock and formatting.
const pullWaitShare = 4

// seedPullTimeout bounds one pull in the background.
const seedPullTimeout = time.Hour

// parseFrom checks from: and fromPath: of a long item.
func parseFrom(it Item, l longItem) (*Seed, error) {
	if l.From == "" {
		if l.FromPath != "" {
			return nil, fmt.Errorf("fromPath %q needs from: the image to take it from", l.FromPath)
		}
		return nil, nil
	}
	if it.Kind != KindVolume {
		return nil, fmt.Errorf("from %q: from is only for volumes", l.From)
	}
	if l.CloneOf != "" {
		return nil, fmt.Errorf("from %q: give from or cloneOf, not both", l.From)
	}
	if len(l.From) > 1024 || strings.ContainsAny(l.From, "\x00\n ") {
		return nil, fmt.Errorf("from %q: not a reference", l.From)
	}
	ref, err := name.ParseReference(l.From, name.StrictValidation)
	if err != nil {
		return nil, fmt.Errorf("from %q: want HOST/REPOSITORY:TAG or HOST/REPOSITORY@sha256:DIGEST: %w", l.From, err)
	}
	s := &Seed{Ref: ref.Name()}
	if l.FromPath != "" {
		p := path.Clean(l.FromPath)
		if !strings.HasPrefix(l.FromPath, "/") || strings.ContainsAny(l.FromPath, "\x00\n") || p == "/" {
			return nil, fmt.Errorf("fromPath %q: want an absolute path of a directory in the image, not /", l.FromPath)
		}
		s.Path = p
	}
	return s, nil
}

// checkPullPolicy refuses a seed that registries.allow does not admit for
// the namespace, before anything reaches the network.
func checkPullPolicy(cfg *config.Config, req *CreateRequest, it Item) error {
	if it.From == nil || cfg.Registries.AllowsPull(req.Namespace, it.From.Ref) {
		return nil
	}
	return fmt.Errorf("%w %s: item %s: from %q: not allowed for namespace %q by registries.allow",
		ErrInvalid, req.ItemsKey, it.Desc, it.From.Ref, req.Namespace)
}

// seeder runs the seeding pulls of a plugin, one per volume.
type seeder struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	// pulls are the pulls running, and those that failed until a request
	// reports the failure, by namespace/name.
	pulls map[string]*seedPull
	// plain counts, by namespace/name, the creations of containers that
	// name the volume without from:, from their check that no pull runs
	// until their Acquire ends. No pull starts meanwhile: the container
	// would make the volume empty under it, and the pull would take that
	// for a volume seeded already.
	plain map[string]int
	// cache is the blob cache of the store whose directory it is in.
	cache *ociartifact.BlobCache
}

type seedPull struct {
	ref  string
	done chan struct{}
	err  error // set before done is closed
}

func newSeeder() *seeder {
	ctx, cancel := context.WithCancel(context.Background())
	return &seeder{ctx: ctx, cancel: cancel, pulls: map[string]*seedPull{}, plain: map[string]int{}}
}

func (s *seeder) close() { s.cancel() }

// blobCache is the cache in the store's blob cache directory, opened once
// per directory. The caller holds s.mu. Without it, pulls go on uncached.
func (s *seeder) blobCache(cfg *config.Config, store *volumes.Store, log *logrus.Entry) *ociartifact.BlobCache {
	dir := store.Paths().BlobCacheDir()
	if s.cache == nil || s.cache.Dir() != dir || s.cache.MaxBytes() != int64(cfg.Registries.BlobCacheBytes) {
		c, err := ociartifact.NewBlobCache(dir, int64(cfg.Registries.BlobCacheBytes))
		if err != nil {
			log.WithError(err).Warn("no blob cache; pulls download every blob")
			return nil
		}
		s.cache = c
	}
	return s.cache
}

// seedJob is one volume of a plan to seed.
type seedJob struct {
	req  volumes.Request
	name string
	seed Seed
	item string
}

// wait seeds the plan's volumes that have a from: and are not seeded yet,
// waiting at most a quarter of lockTimeout. The error names the item and the reference. The
// plan's volumes without from: are the container's until release is
// called, once its Acquire has ended (see plain); wait releases them itself
// when it fails.
func (s *seeder) wait(cfg *config.Config, store *volumes.Store, req *CreateRequest, plan *Plan, log *logrus.Entry) (release func(), err error) {
	var jobs []seedJob
	seeded := map[string]bool{}
	for _, m := range plan.Mounts {
		if m.Kind != KindVolume {
			continue
		}
		if seed, ok := plan.Seeds[m.Volume]; ok {
			r := plan.Volumes[m.Volume]
			n := volumeName(r)
			seeded[r.Namespace+"/"+n] = true
			jobs = append(jobs, seedJob{req: r, name: n, seed: *seed, item: m.Item})
		}
	}
	var held []string
	done := func() { s.release(held) }
	defer func() {
		if err != nil {
			done()
		}
	}()
	for _, m := range plan.Mounts {
		if m.Kind != KindVolume {
			continue
		}
		r := plan.Volumes[m.Volume]
		n := volumeName(r)
		key := r.Namespace + "/" + n
		if seeded[key] {
			continue
		}
		// The name is the pull's until it ends: a container that asks
		// for it without from: would make it empty first.
		ref, ok := s.hold(key)
		if !ok {
			return nil, fmt.Errorf("%s: item %s: %w: volume %q is being pulled from %q; a retry once the pull ends finds it",
				req.ItemsKey, plan.itemOf(r.Namespace, n), volumes.ErrBusy, n, ref)
		}
		held = append(held, key)
	}
	if len(jobs) == 0 {
		return done, nil
	}
	budget := time.Duration(cfg.LockTimeout) / pullWaitShare
	deadline := time.NewTimer(budget)
	defer deadline.Stop()
	for _, j := range jobs {
		fail := func(err error) error {
			return fmt.Errorf("%s: item %s: from %q: %w", req.ItemsKey, j.item, j.seed.Ref, err)
		}
		pull, err := s.start(cfg, store, req.PodSandboxID, j, log)
		if err != nil {
			return nil, fail(err)
		}
		if pull == nil {
			continue // seeded already
		}
		select {
		case <-pull.done:
		case <-deadline.C:
			return nil, fail(fmt.Errorf("%w: still pulling into volume %q after %s (a quarter of lockTimeout); the pull goes on outside the request, and a retry of the container's creation finds it done",
				volumes.ErrBusy, j.name, budget))
		}
		if pull.err != nil {
			s.forget(j.req.Namespace+"/"+j.name, pull)
			return nil, fail(pull.err)
		}
	}
	return done, nil
}

// hold counts a creation of a container that names the volume key without
// from: (see plain), unless a pull into it runs: then it returns the pull's
// reference and false. The check and the count are one step under s.mu, as
// start's check of the count and its pull's registration are.
func (s *seeder) hold(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pulls[key]; ok {
		select {
		case <-p.done: // failed: nothing is left of it
		default:
			return p.ref, false
		}
	}
	s.plain[key]++
	return "", true
}

// release ends the holds of hold on keys.
func (s *seeder) release(keys []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if s.plain[k]--; s.plain[k] <= 0 {
			delete(s.plain, k)
		}
	}
}

// start returns the pull of job's volume, starting one unless the volume is
// seeded already (then nil).
func (s *seeder) start(cfg *config.Config, store *volumes.Store, podID string, j seedJob, log *logrus.Entry) (*seedPull, error) {
	key := j.req.Namespace + "/" + j.name
	s.mu.Lock()
	p, ok := s.pulls[key]
	s.mu.Unlock()
	if ok {
		return p, nil
	}
	// Read without the store's lock, which another process may hold for
	// longer than a request may wait.
	exists := false
	switch state, err := store.Seeds().ImportState(j.req.Namespace, j.name); {
	case errors.Is(err, volumes.ErrNotFound):
	case err != nil:
		return nil, err
	case state == volumes.ImportNone:
		return nil, nil
	case state == volumes.ImportFilling:
		return nil, fmt.Errorf("%w: an import into volume %q is running; a retry finds it done", volumes.ErrBusy, j.name)
	default:
		exists = true // a pull that was cut short: started over
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pulls[key]; ok {
		return p, nil // another request started it meanwhile
	}
	if s.plain[key] > 0 {
		// Its Acquire may make the volume, empty, at any moment.
		return nil, fmt.Errorf("%w: volume %q is being made by a container that names it without from:; a retry finds it and uses it as it is",
			volumes.ErrBusy, j.name)
	}
	p = &seedPull{ref: j.seed.Ref, done: make(chan struct{})}
	s.pulls[key] = p
	cache := s.blobCache(cfg, store, log)
	go func() {
		log := log.WithFields(logrus.Fields{"volume": key, "from": j.seed.Ref})
		log.Info("pulling into a new volume")
		start := time.Now()
		ctx, cancel := context.WithTimeout(s.ctx, seedPullTimeout)
		err := pullSeed(ctx, cfg, store, cache, j, exists, podID)
		cancel()
		p.err = err
		if err == nil {
			s.forget(key, p)
			log.WithField("took", time.Since(start).Round(time.Millisecond)).Info("pulled")
		} else {
			log.WithError(err).Warn("pull failed; the next creation of a container that asks for it reports it")
		}
		close(p.done)
	}()
	return p, nil
}

func (s *seeder) forget(key string, p *seedPull) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pulls[key] == p {
		delete(s.pulls, key)
	}
}

// pullSeed makes job's volume (or takes the one a pull cut short left,
// exists) and fills it from the registry. On failure it removes the volume.
func pullSeed(ctx context.Context, cfg *config.Config, store *volumes.Store, cache *ociartifact.BlobCache, j seedJob, exists bool, podID string) error {
	ro := ociartifact.RemoteOptions{AuthFile: cfg.Registries.AuthFile, CAFile: cfg.Registries.CAFile,
		InsecureHosts: cfg.Registries.InsecureHosts, UserAgent: "nri-volumes", Cache: cache}
	limits := volumes.ArchiveLimits{MaxBytes: int64(cfg.Limits.CopyUpMaxSize), MaxFiles: cfg.Limits.CopyUpMaxFiles}
	lower := func(n int64) {
		if n > 0 && (limits.MaxBytes == 0 || n < limits.MaxBytes) {
			limits.MaxBytes = n
		}
	}
	lower(int64(cfg.Registries.MaxPullBytes))
	r := j.req
	write, err := seedSource(ctx, j, ro, &r, &limits, lower)
	if err != nil {
		return err
	}
	if max := int64(cfg.Sizes.MaxSize); max > 0 && r.Size > max {
		return fmt.Errorf("%w: a volume of %s is above sizes.maxSize %s", volumes.ErrInvalid, volumes.FormatBytes(r.Size), cfg.Sizes.MaxSize)
	}
	if !exists {
		err := createSeeding(ctx, store, r)
		if errors.Is(err, volumes.ErrExists) {
			// Made since this pull was started, outside the plugin
			// (volume create or pull): used as it is, unless it is
			// still being filled, which a retry finds. (No container
			// of this plugin makes it meanwhile: see seeder.plain.)
			if st, serr := store.Seeds().ImportState(r.Namespace, j.name); serr == nil && st == volumes.ImportNone {
				return nil
			}
		}
		if err != nil {
			return err
		}
	}
	err = chargeSeed(store, cfg, podID, &limits, func() (int64, error) { return importSeed(store, r.Namespace, j.name, write, limits) })
	if err != nil {
		if rerr := store.Remove(r.Namespace, j.name); rerr != nil && !errors.Is(rerr, volumes.ErrNotFound) {
			return errors.Join(err, fmt.Errorf("removing the volume again: %w", rerr))
		}
	}
	return err
}

// seedSource reads the manifest and config of what j seeds from, an
// artifact or (j.seed.Path set) an ordinary image, and returns what writes
// its content as one tar. It fills in r's size and labels from an artifact's
// config, lowers limits to the volume's size, and refuses an artifact whose
// config declares more than the limits allow, before any layer is read.
func seedSource(ctx context.Context, j seedJob, ro ociartifact.RemoteOptions, r *volumes.Request, limits *volumes.ArchiveLimits, lower func(int64)) (func(w io.Writer) error, error) {
	if j.seed.Path == "" {
		ro.MaxPullBytes = limits.MaxBytes // no layer downloaded past what may be kept
		art, err := ociartifact.Fetch(ctx, j.seed.Ref, ro)
		if err != nil {
			return nil, err
		}
		if r.Size == 0 {
			r.Size = art.Config.Limit
		}
		if r.Name != "" && len(art.Config.Labels) > 0 {
			labels := make(map[string]string, len(art.Config.Labels)+len(r.Labels))
			for k, v := range art.Config.Labels {
				labels[k] = v
			}
			for k, v := range r.Labels {
				labels[k] = v
			}
			r.Labels = labels
		}
		lower(r.Size)
		if limits.MaxBytes > 0 && art.Config.Bytes > limits.MaxBytes {
			return nil, fmt.Errorf("%w: it holds %d bytes, more than the %d allowed (the volume's size, limits.copyUpMaxSize, registries.maxPullBytes)",
				ociartifact.ErrArtifact, art.Config.Bytes, limits.MaxBytes)
		}
		if limits.MaxFiles > 0 && art.Config.Entries > limits.MaxFiles {
			return nil, fmt.Errorf("%w: it holds %d entries, more than the %d allowed (limits.copyUpMaxFiles)",
				ociartifact.ErrArtifact, art.Config.Entries, limits.MaxFiles)
		}
		return art.WriteTar, nil
	}
	img, err := ociartifact.FetchImage(ctx, j.seed.Ref, ro)
	if err != nil {
		return nil, err
	}
	lower(r.Size)
	// What is thrown away is read too: bounded, as a multiple of
	// what may be kept.
	maxRead := int64(0)
	if limits.MaxBytes > 0 {
		maxRead = 4*limits.MaxBytes + 64<<20
	}
	return func(w io.Writer) error { return ociartifact.WriteImagePath(img, j.seed.Path, maxRead, w) }, nil
}

// createSeeding makes the volume, waiting for its image to be formatted
// when it is sized: the pull runs outside any request.
func createSeeding(ctx context.Context, store *volumes.Store, r volumes.Request) error {
	for {
		_, err := store.Seeds().Create(r)
		var fe *volumes.FormattingError
		if !errors.As(err, &fe) || fe.Err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// chargeSeed counts the pull against the pod's copy-up budget
// (limits.copyUpMaxSizePerPod), lowering limits to what is left of it.
func chargeSeed(store *volumes.Store, cfg *config.Config, podID string, limits *volumes.ArchiveLimits, fill func() (int64, error)) error {
	podMax := int64(cfg.Limits.CopyUpMaxSizePerPod)
	if podMax <= 0 || podID == "" {
		_, err := fill()
		return err
	}
	var ferr error
	err := store.PodBudgets().Charge(podID, func(used int64) (int64, error) {
		n, byPod := volumes.PodCopyUpMaxBytes(limits.MaxBytes, podMax, used)
		if n < 0 {
			return 0, fmt.Errorf("%w: the pod's copy-ups and pulls used its %d bytes (limits.copyUpMaxSizePerPod)", volumes.ErrArchive, podMax)
		}
		limits.MaxBytes = n
		written, err := fill()
		if err != nil && byPod && errors.Is(err, volumes.ErrArchive) {
			err = fmt.Errorf("%w (what the pod has left of limits.copyUpMaxSizePerPod: %d bytes)", err, n)
		}
		ferr = err
		return written, err
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// importSeed streams write's tar into the store's Import, which refuses a
// hostile tar and empties the volume on failure.
func importSeed(store *volumes.Store, ns, name string, write func(io.Writer) error, limits volumes.ArchiveLimits) (int64, error) {
	var n int64
	err := ociartifact.Stream(write, func(r io.Reader) error {
		stats, err := store.Import(ns, name, r, limits)
		n = stats.Bytes
		return err
	})
	return n, err
}
