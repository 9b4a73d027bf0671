package backup

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeBehind writes to f, starting the write-out of each chunk as soon as it is written and
// waiting for the one before it, so that at most two chunks are dirty or in flight.
type writeBehind struct {
	f       *os.File
	off     int64 // bytes written
	started int64 // bytes whose write-out has been started
	waited  int64 // bytes written out
}

func newWriteBehind(f *os.File) *writeBehind { return &writeBehind{f: f} }

func (w *writeBehind) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	for err == nil && w.off-w.started >= writeBehindChunk {
		fd := int(w.f.Fd())
		// Errors here are only advice lost: the final Sync still makes the file durable.
		unix.SyncFileRange(fd, w.started, writeBehindChunk, unix.SYNC_FILE_RANGE_WRITE)
		w.started += writeBehindChunk
		if w.started-w.waited > writeBehindChunk {
			unix.SyncFileRange(fd, w.waited, writeBehindChunk, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
			w.waited += writeBehindChunk
		}
	}
	return n, err
}
