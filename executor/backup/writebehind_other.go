//go:build !linux

package backup

import "os"

// writeBehind is a plain write where the kernel has no sync_file_range.
type writeBehind struct{ f *os.File }

func newWriteBehind(f *os.File) *writeBehind { return &writeBehind{f: f} }

func (w *writeBehind) Write(p []byte) (int, error) { return w.f.Write(p) }
