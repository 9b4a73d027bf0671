package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/deployer-dev/deployer/executor/backup"
)

// fuzzDeclared is the uncompressed size the fuzzed backups declare: what bounds each run's
// memory, disk and time. A restore's work is in proportion to it (an archive of 4 KiB that
// names a path 2000 directories deep makes 2000 directories, each a header with a name of up
// to 4 KiB: 300 ms at 1 MiB); at 64 KiB no run takes more than a few milliseconds, which the
// fuzzing engine needs: it minimizes every new input by running it thousands of times, and
// with runs of 300 ms it did nothing else (0 runs a second for minutes). Every branch is as
// reachable.
const fuzzDeclared = 64 << 10

func fuzzSeeds(f testing.TB) [][]byte {
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

// FuzzRestoreTar feeds the fuzzer's bytes as the tar stream of a volume (what an archive
// decompresses to) to a restore's Tame and to verify's reading of it, which reaches the tar
// reader and Tame far more often than compressed bytes do. Besides FuzzRestoreArchive's checks:
// what verify passes, the restore does not refuse. It runs in memory (verify writes only the
// database it finds, in a directory made for it), without the store, its downloads and their
// directories, which FuzzRestoreArchive goes through.
//
// Run both with -fuzzminimizetime 5s (as .ci/run does for FuzzLoad): the engine minimizes
// every input that finds new code, for up to a minute by default, and reports no runs
// meanwhile; its minimizer tries every pair of cut points, quadratic in the input's length, so
// with tar inputs of kilobytes it always runs to that limit ("0/sec" for a minute after each
// new input).
func FuzzRestoreTar(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if len(s) <= 32<<10 {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		l, _, terr := restoreThrough(t, io.NopCloser(bytes.NewReader(raw)), fuzzDeclared)
		if l.bytes > fuzzDeclared {
			t.Errorf("the restore handed the engine %d logical bytes for an archive that declares %d", l.bytes, fuzzDeclared)
		}
		dir := t.TempDir()
		dbs := []backup.DB{{Name: "main", Volume: "data", Path: "app.db"}}
		_, verr := backup.VerifyArchive(bytes.NewReader(raw), dbs, dir, fuzzDeclared)
		if verr == nil && terr != nil {
			t.Errorf("verify passes an archive the restore refuses: %v", terr)
		}
		left, _ := os.ReadDir(dir)
		for _, e := range left {
			if n := e.Name(); n != backup.ScratchName(0) && n != backup.ScratchName(0)+"-wal" {
				t.Errorf("verify wrote %q", n)
			}
		}
	})
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
