package backup

import "os"

// writeBehindChunk is how much of a large file being written may wait in the page cache before
// the kernel is told to write it out. A backup of a gigabyte otherwise sits dirty in memory until
// its final fsync, which then writes it all at once: every fsync of the live app on the same
// disk (SQLite's commits) waits behind that burst. In chunks, each commit waits behind at most
// one.
const writeBehindChunk = 4 << 20

// shrinkStep is how much of a large file is freed at a time before it is removed.
const shrinkStep = 16 << 20

// shrink empties a large file of size bytes in steps, each made durable before the next, so
// that removing it does not free a gigabyte at once: on a filesystem mounted with discard that
// is one long trim, and the live app's commits on the same disk wait for it (60 ms here for
// 1 GiB). A failure only leaves the file larger: removing it is what follows either way.
func shrink(f *os.File, size int64) {
	for n := size; n > 4*shrinkStep; {
		n -= shrinkStep
		if f.Truncate(n) != nil || f.Sync() != nil {
			return
		}
	}
}
