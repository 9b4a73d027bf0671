package backup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

var osTempDir = os.TempDir

// The sizes in a manifest are claims, not limits: every read is bounded by what the manifest
// declares, and by caps the deployer sets whatever a manifest declares.
const (
	// MaxObjectBytes bounds one stored object (a compressed archive, the logs).
	MaxObjectBytes int64 = 1 << 40
	// MaxVolumeBytes bounds the uncompressed tar of one volume.
	MaxVolumeBytes int64 = 1 << 40
	// spaceMargin is kept free on any disk the deployer writes to.
	spaceMargin int64 = 64 << 20
	// maxNameBytes bounds an entry's path in the volume and a link's target: Linux makes none of
	// PATH_MAX (4096) bytes with its terminating NUL, nor a name (one component) over NAME_MAX.
	maxNameBytes = 4095
	maxComponent = 255
	// maxWindowBytes bounds the zstd window an archive may ask for (the decoder's memory); the
	// deployer writes 4 MiB windows.
	maxWindowBytes = 32 << 20
	// futureSkew is how far in the future a backup's ID may be dated (clocks differ a little)
	// before it is refused and left out of retention.
	futureSkew = 10 * time.Minute
)

// Variables for tests.
var (
	// maxListObjects bounds the keys one listing of a service's backups looks at, whatever
	// they are: a store with more under a service's directory was not filled by the deployer
	// alone.
	maxListObjects = 100_000
	// maxManifestsBytes bounds the manifests one listing reads, all together; the backups
	// beyond it (the oldest) are listed as not read, and never counted or deleted.
	maxManifestsBytes int64 = 64 << 20
	// maxArchiveEntries bounds the entries of one volume's archive that a restore or a verify
	// reads (what remembering them costs: about 40 bytes each, 200 MB at the bound).
	maxArchiveEntries int64 = 5_000_000
	// pruneDeadline bounds the prune after a backup (listing, manifests, deletes): the backup
	// is complete whatever it finds, and the deploy goes on.
	pruneDeadline = 5 * time.Minute
)

// ErrTooManyObjects is returned by a listing that would go past maxListObjects.
var ErrTooManyObjects = errors.New("too many objects")

func tooMany(store, prefix string) error {
	return fmt.Errorf("backup store %s holds more than %d objects under %s, more than the deployer lists: they were not all written by it; remove what is not a backup: %w",
		store, maxListObjects, Printable(prefix), ErrTooManyObjects)
}

// FreeBytes is the space left for an unprivileged writer on the filesystem holding dir.
func FreeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// ensureSpace fails unless the filesystem of dir has room for n more bytes and a margin.
func ensureSpace(dir string, n int64, what string) error {
	if dir == "" {
		dir = osTempDir()
	}
	free, err := FreeBytes(dir)
	if err != nil {
		return nil // unknown: the write itself will say when the disk is full
	}
	if n+spaceMargin > free {
		return fmt.Errorf("%s needs %s in %s, which has %s free: free some space or set TMPDIR to a larger disk", what, HumanBytes(n), dir, HumanBytes(free))
	}
	return nil
}

// ErrTooLarge is returned when a stream holds more than it was declared or allowed to.
var ErrTooLarge = errors.New("larger than declared")

// boundedReader returns at most n bytes of r, then fails with ErrTooLarge if r has more: a
// claim that is exceeded is an error, not a silent truncation.
type boundedReader struct {
	r    io.Reader
	left int64
	what string
}

func bounded(r io.Reader, n int64, what string) io.Reader {
	return &boundedReader{r: r, left: n, what: what}
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One more byte tells a stream that ends exactly here from one that goes on.
		var one [1]byte
		n, err := b.r.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("%s: %w", b.what, ErrTooLarge)
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// HumanBytes formats a byte count for people (KiB, MiB, GiB).
func HumanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func randomSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
