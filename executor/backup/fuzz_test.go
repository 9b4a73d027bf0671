package backup_test

import (
	"archive/tar"
	"context"
	"os"
	"testing"

	"github.com/deployer-dev/deployer/executor/backup"
)

// fuzzDeclared is the uncompressed size the fuzzed backups declare: what bounds each run's
// memory and disk.
const fuzzDeclared = 1 << 20

func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, c := range hostileArchives(f) {
		seeds = append(seeds, c.raw)
	}
	seeds = append(seeds, tarOf(f, entry{name: "data/", typ: tar.TypeDir}, entry{name: "data/app.db", body: "SQLite format 3\x00"},
		entry{name: "data/l", typ: tar.TypeLink, link: "data/app.db"}, entry{name: "data/s", typ: tar.TypeSymlink, link: "/etc"},
		entry{name: "data/s/x", body: "x"}, entry{name: "data/suid", body: "#!", mode: 0o4755}, entry{name: "data/fifo", typ: tar.TypeFifo}))
	return seeds
}

// FuzzRestoreArchive feeds arbitrary bytes to a restore and a verify as the stored archive of a
// backup whose manifest matches them (size, sha256) and declares 1 MiB uncompressed, as
// someone with write access to the store would. Whatever the bytes, neither panics nor hangs,
// what reaches the engine is inside the volume, holds no device, setuid bit or security
// attribute, and adds up to no more than the declared size, and verify leaves nothing behind.
func FuzzRestoreArchive(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if z := zst(f, s); len(z) <= 32<<10 {
			f.Add(z)
		}
	}
	f.Add(append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x41, 0, 0}, "not much"...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, stored []byte) { restoreStored(t, stored) })
}

// FuzzRestoreTar is FuzzRestoreArchive with the fuzzer's bytes as the tar inside the archive
// (compressed by the test), which reaches the tar reader and Tame far more often.
func FuzzRestoreTar(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) <= 32<<10 {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) { restoreStored(t, zst(t, raw)) })
}

func restoreStored(t *testing.T, stored []byte) {
	ctx := context.Background()
	store, m := planted(t, newMemStore(), stored, fuzzDeclared, true) // in memory: no fsync per run
	rc, err := backup.OpenVolume(ctx, store, m, "data", nil, t.TempDir())
	if err != nil {
		return
	}
	if l, _, _ := restoreThrough(t, rc, fuzzDeclared); l.bytes > fuzzDeclared {
		t.Errorf("the restore handed the engine %d logical bytes for an archive that declares %d", l.bytes, fuzzDeclared)
	}
	tmp := t.TempDir()
	backup.Verify(ctx, store, m, nil, tmp)
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("verify left %d entries in its temporary directory", len(left))
	}
}
