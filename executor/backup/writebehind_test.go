package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A file written through the write-behind holds exactly what was written, whatever the sizes
// of the writes against its chunks.
func TestWriteBehind(t *testing.T) {
	want := make([]byte, 3*writeBehindChunk+12345)
	rand.Read(want)
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := newWriteBehind(f)
	for rest := want; len(rest) > 0; {
		n := min(len(rest), 1<<20+7)
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Seek(0, io.SeekStart)
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, want) {
		t.Fatalf("the file holds %d bytes, not the %d written", len(got), len(want))
	}
}

// A large archive is emptied in steps before it is removed; a small one is left as it is.
func TestShrink(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int64{1 << 20, 10*shrinkStep + 5} {
		f, err := os.Create(filepath.Join(dir, "archive"))
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(size)
		shrink(f, size)
		info, _ := f.Stat()
		f.Close()
		if size < 4*shrinkStep && info.Size() != size || size > 4*shrinkStep && info.Size() > 4*shrinkStep {
			t.Errorf("a file of %d bytes shrank to %d", size, info.Size())
		}
	}
	// Deleting through the store removes it whole.
	l := &Local{Dir: dir}
	if err := l.Delete(context.Background(), "archive"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "archive")); !os.IsNotExist(err) {
		t.Errorf("after Delete: %v", err)
	}
}
