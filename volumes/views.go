package volumes

// The Store serves four kinds of caller: the plugin's requests, the OCI
// copy-up hook, the CLI and the metrics. Its own methods are the volumes'
// life (create, acquire, release, remove, export, import, clone, ...);
// what only one kind of caller needs is a view the Store hands out, here,
// each with its methods in the file of its concern. Pins, which has state
// of its own, is handed out from pins.go.

// CopyUps is what readies the new volumes of a container between Acquire
// and the start of its process: the plugin reads their copy-up status and
// adopts the runtime's copy of the image (Status, Adopt); the OCI hook fills
// them from the image, or marks them done when there is nothing to copy
// (Copy, FillClone, MarkEmpty), gives their root to the container's user
// (ChownRoot) and makes them durable (Persist), which the plugin also does
// in the background and at the container's start. It is a view of the
// Store; each operation holds the lock of its one volume, never the
// store's.
type CopyUps struct{ s *Store }

// CopyUps returns the copy-up operations of the store's volumes.
func (s *Store) CopyUps() CopyUps { return CopyUps{s} }

// PodBudgets are the records of the bytes each pod sandbox's copy-ups
// wrote (limits.copyUpMaxSizePerPod), in copyUpBytesDir, one file per pod,
// each flocked by the copy-up that charges it (see package podbudget): the
// hook and the plugin's seeding charge them, the plugin prepares and
// forgets them. It is a view of the Store, which owns the directory.
type PodBudgets struct{ s *Store }

// PodBudgets returns the copy-up budgets of the store's pod sandboxes.
func (s *Store) PodBudgets() PodBudgets { return PodBudgets{s} }

// Stats are what the store tells about itself, answered from memory (the
// counts after one read of every volume when another process changed the
// store): the metrics read the counts and sums (Namespaces, Totals) at
// every scrape, /healthz checks that the store is usable (Ping), and the
// CLI's ls shows the totals. It is a view of the Store.
type Stats struct{ s *Store }

// Stats returns what the store tells about itself.
func (s *Store) Stats() Stats { return Stats{s} }

// EmptyTargets are the records of the image targets with nothing to copy
// up, in imageEmptyDir, kept by package imageempty: the hook records them,
// the plugin looks them up to skip the hook and removes those of images
// gone. It is a view of the Store, which owns the directory.
type EmptyTargets struct{ s *Store }

// EmptyTargets returns the store's records of empty image targets.
func (s *Store) EmptyTargets() EmptyTargets { return EmptyTargets{s} }

// Seeds are the volumes filled by a seeding pull, which the plugin makes
// held out of containers (Create) and reads the state of (ImportState),
// until Import ends well. It is a view of the Store.
type Seeds struct{ s *Store }

// Seeds returns the store's seeding volumes.
func (s *Store) Seeds() Seeds { return Seeds{s} }

// Snapshots are the snapshots of a store's volumes: the CLI takes, lists,
// restores and removes them, and the metrics read their sums. It is a view
// of the Store, whose locks its operations take.
type Snapshots struct{ s *Store }

// Snapshots returns the snapshots of the store's volumes.
func (s *Store) Snapshots() Snapshots { return Snapshots{s} }

// Paths are the store's answers about its places on disk, for the plugin:
// which volume a mount source is, and the directories it checks or hands to
// others. Only the store knows its layout; callers never build or take
// apart these paths themselves. It is a view of the Store.
type Paths struct{ s *Store }

// Paths returns the store's answers about its places on disk.
func (s *Store) Paths() Paths { return Paths{s} }
