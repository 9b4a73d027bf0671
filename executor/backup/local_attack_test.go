//go:build linux

package backup_test

// Attacks on a local store by someone who can rename entries in a service's directory (they
// made proj/ or proj/web/ before the first backup) but not write inside the deployer's own
// backup directories (0700): between a prune's listing and its deletes they exchange the
// directory being pruned with the newest genuine backup, replace it with a link, or replace a
// large file being freed with a link to a genuine archive.

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/deployer-dev/deployer/executor/backup"
)

// afterList is a local store whose List runs hook once it has listed: what someone renames
// between a prune's listing and its reads and deletes.
type afterList struct {
	*backup.Local
	hook func()
}

func (a *afterList) List(ctx context.Context, prefix string) ([]backup.Object, error) {
	out, err := a.Local.List(ctx, prefix)
	if a.hook != nil {
		a.hook()
	}
	return out, err
}

// exchange swaps two names of a directory atomically, as renameat2(RENAME_EXCHANGE) does.
func exchange(t testing.TB, dir, a, b string) {
	t.Helper()
	if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, a), unix.AT_FDCWD, filepath.Join(dir, b), unix.RENAME_EXCHANGE); err != nil {
		t.Skipf("renameat2(RENAME_EXCHANGE): %v", err)
	}
}

// snapshotBackup is what a backup's directory holds: each file's bytes.
func snapshotBackup(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// decoy plants an incomplete "backup" dated three days ago, which a prune deletes, with a file
// of size bytes (sparse).
func decoy(t *testing.T, web string, size int64) string {
	t.Helper()
	old := time.Now().Add(-72 * time.Hour)
	id := idAt(old, 800)
	d := filepath.Join(web, id)
	os.RemoveAll(d)
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(d, "volume-data.tar.zst")
	if err := os.WriteFile(f, []byte("decoy"), 0o644); err != nil {
		t.Fatal(err)
	}
	if size > 0 {
		os.Truncate(f, size)
	}
	os.Chtimes(f, old, old)
	return id
}

// A prune reads and deletes a local store's backups only where its listing found them: a
// directory or a file renamed, exchanged or replaced by a link after the listing is left alone
// (with a warning), and the newest genuine backup keeps every byte.
func TestPruneActsWhereItListed(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		keep int
		// attack runs after the listing; it gets the service's directory, the genuine backups
		// (oldest first) and the decoy's ID.
		attack func(t *testing.T, web string, g []*backup.Manifest, dec string)
	}{
		{"the decoy exchanged with the newest backup", 10, func(t *testing.T, web string, g []*backup.Manifest, dec string) {
			exchange(t, web, dec, g[2].ID)
		}},
		{"the decoy replaced by a link to the newest backup", 10, func(t *testing.T, web string, g []*backup.Manifest, dec string) {
			os.Rename(filepath.Join(web, dec), filepath.Join(web, "moved"))
			os.Symlink(g[2].ID, filepath.Join(web, dec))
		}},
		{"the oldest backup exchanged with the newest", 1, func(t *testing.T, web string, g []*backup.Manifest, dec string) {
			exchange(t, web, g[0].ID, g[2].ID)
		}},
		{"the decoy's large file replaced by a link to the newest archive", 10, func(t *testing.T, web string, g []*backup.Manifest, dec string) {
			f := filepath.Join(web, dec, "volume-data.tar.zst")
			os.Remove(f)
			os.Symlink("../"+g[2].ID+"/"+g[2].Volumes[0].Key, f)
		}},
		{"the decoy's large file replaced by a hard link to the newest archive", 10, func(t *testing.T, web string, g []*backup.Manifest, dec string) {
			f := filepath.Join(web, dec, "volume-data.tar.zst")
			os.Remove(f)
			if err := os.Link(filepath.Join(web, g[2].ID, g[2].Volumes[0].Key), f); err != nil {
				t.Skipf("link: %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			local := &backup.Local{Dir: t.TempDir()}
			store := &afterList{Local: local}
			var g []*backup.Manifest
			for i := 0; i < 3; i++ {
				m, _ := takeKeep(t, store, nil, 0)
				g = append(g, m)
			}
			web := filepath.Join(local.Dir, "proj", "web")
			dec := decoy(t, web, 1<<30)
			newest := snapshotBackup(t, filepath.Join(web, g[2].ID))
			inode := func(name string) uint64 {
				var st unix.Stat_t
				unix.Lstat(filepath.Join(web, name), &st)
				return st.Ino
			}
			newestDir := inode(g[2].ID)
			store.hook = func() { store.hook = nil; c.attack(t, web, g, dec) }
			rep, err := backup.Prune(ctx, store, want, nil, c.keep, "")
			if err != nil {
				t.Fatal(err)
			}
			// Wherever the newest backup's directory is now, it holds every byte it held.
			var where string
			ents, _ := os.ReadDir(web)
			for _, e := range ents {
				if inode(e.Name()) == newestDir && e.Type().IsDir() {
					where = e.Name()
				}
			}
			if where == "" {
				t.Fatalf("the newest backup's directory is gone (pruned %v)", rep.Deleted)
			}
			if got := snapshotBackup(t, filepath.Join(web, where)); len(got) != len(newest) {
				t.Errorf("the newest backup holds %d files, had %d", len(got), len(newest))
			} else {
				for k, v := range newest {
					if got[k] != v {
						t.Errorf("the newest backup's %s changed: %d bytes, had %d", k, len(got[k]), len(v))
					}
				}
			}
			for _, d := range rep.Deleted {
				if d == g[2].ID || d == g[1].ID && c.keep > 1 {
					t.Errorf("deleted %s", d)
				}
			}
			t.Logf("deleted %v; warned %q", rep.Deleted, rep.Warnings)
		})
	}
}

// The same attacks as a race: a goroutine exchanges the names as fast as it can while prunes
// run, round after round. None of them takes a byte of the newest genuine backup (with the
// prune's reads and deletes bound to what it listed, the race cannot be won: the rounds show
// the mechanism holds under timing no test chooses).
func TestPruneUnderRenameRace(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 20
	}
	ctx := context.Background()
	for _, variant := range []string{"directories", "link", "large file"} {
		t.Run(variant, func(t *testing.T) {
			local := &backup.Local{Dir: t.TempDir()}
			g, _ := takeKeep(t, local, nil, 0)
			web := filepath.Join(local.Dir, "proj", "web")
			archive := filepath.Join(web, g.ID, g.Volumes[0].Key)
			saved, _ := os.ReadFile(archive)
			manifest, _ := os.ReadFile(filepath.Join(web, g.ID, backup.ManifestName))
			var st unix.Stat_t
			unix.Lstat(filepath.Join(web, g.ID), &st)
			genuineDir := st.Ino
			losses, swaps := 0, int64(0)
			for round := 0; round < rounds; round++ {
				var size int64
				if variant == "large file" {
					size = 128 << 20 // sparse, and large enough to be freed in steps before its removal
				}
				dec := decoy(t, web, size)
				var dir, a, b string
				switch variant {
				case "directories":
					dir, a, b = web, dec, g.ID
				case "link":
					os.Remove(filepath.Join(web, "L"))
					os.Symlink(g.ID, filepath.Join(web, "L"))
					dir, a, b = web, dec, "L"
				case "large file":
					dir, a, b = filepath.Join(web, dec), "volume-data.tar.zst", "x"
					os.Symlink("../"+g.ID+"/"+g.Volumes[0].Key, filepath.Join(dir, "x"))
				}
				var stop atomic.Bool
				var wg sync.WaitGroup
				wg.Add(1)
				go func() {
					defer wg.Done()
					for !stop.Load() {
						if unix.Renameat2(unix.AT_FDCWD, filepath.Join(dir, a), unix.AT_FDCWD, filepath.Join(dir, b), unix.RENAME_EXCHANGE) == nil {
							atomic.AddInt64(&swaps, 1)
						}
						runtime.Gosched()
					}
				}()
				backup.Prune(ctx, local, want, nil, 10, "")
				stop.Store(true)
				wg.Wait()
				// The genuine backup's directory back at its name, wherever the race left it.
				if variant == "directories" {
					ents, _ := os.ReadDir(web)
					for _, e := range ents {
						var st unix.Stat_t
						if unix.Lstat(filepath.Join(web, e.Name()), &st) == nil && st.Ino == genuineDir && e.Name() != g.ID {
							if _, err := os.Lstat(filepath.Join(web, g.ID)); err == nil {
								exchange(t, web, e.Name(), g.ID)
							} else { // the decoy, which had its name, was pruned
								os.Rename(filepath.Join(web, e.Name()), filepath.Join(web, g.ID))
							}
						}
					}
				}
				got, err := os.ReadFile(archive)
				m, merr := os.ReadFile(filepath.Join(web, g.ID, backup.ManifestName))
				if err != nil || !bytes.Equal(got, saved) || merr != nil || !bytes.Equal(m, manifest) {
					losses++
					t.Errorf("round %d: the genuine backup lost its archive (%v, %d bytes of %d) or its manifest (%v)", round, err, len(got), len(saved), merr)
					os.MkdirAll(filepath.Join(web, g.ID), 0o700)
					os.WriteFile(archive, saved, 0o600)
					os.WriteFile(filepath.Join(web, g.ID, backup.ManifestName), manifest, 0o600)
				}
				os.RemoveAll(filepath.Join(web, dec))
				os.RemoveAll(filepath.Join(web, "L"))
			}
			t.Logf("%d rounds, %d exchanges, %d losses", rounds, swaps, losses)
		})
	}
}

// A directory of a local store that others can change is named in the listing's warnings and
// in the backup's, and the deployer never writes a backup's files into a directory of someone
// else's.
func TestLocalStoreExposedDirectories(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store := &backup.Local{Dir: dir}
	takeKeep(t, store, nil, 0)
	web := filepath.Join(dir, "proj", "web")
	if err := os.Chmod(web, 0o777); err != nil {
		t.Fatal(err)
	}
	l, err := backup.List(ctx, store, want, nil)
	if err != nil {
		t.Fatal(err)
	}
	if text := strings.Join(l.Warnings, "\n"); !strings.Contains(text, "the directory proj/web belongs to uid") || !strings.Contains(text, "mode 777") {
		t.Errorf("warnings: %q", l.Warnings)
	}
	_, warned := takeKeep(t, store, nil, 5)
	if !strings.Contains(strings.Join(warned, "\n"), "others can rename or hide the backups in it") {
		t.Errorf("the backup warned %q", warned)
	}
	// A backup's directory made beforehand by someone else (writable by all) is not written to.
	theirs := filepath.Join(web, "20990101T000000.000Z-r1")
	os.Mkdir(theirs, 0o777)
	os.Chmod(theirs, 0o777)
	err = store.Put(ctx, "proj/web/20990101T000000.000Z-r1/volume-data.tar.zst", strings.NewReader("secret data"))
	if err == nil || !strings.Contains(err.Error(), "writes only into a directory of its own") {
		t.Errorf("put into someone else's directory: %v", err)
	}
	if ents, _ := os.ReadDir(theirs); len(ents) != 0 {
		t.Errorf("%d files written there", len(ents))
	}
}

// A tree thousands of directories deep in a service's directory (names of 255 bytes) costs a
// listing nothing: it looks no deeper than a backup's directory and what is directly inside it.
func TestDeepTreeInALocalStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store := &backup.Local{Dir: dir}
	g, _ := takeKeep(t, store, nil, 0)
	base := filepath.Join(dir, "proj", "web", "junk")
	os.MkdirAll(base, 0o700)
	fd, err := unix.Open(base, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.Repeat("d", 255)
	const depth = 2000
	for i := 0; i < depth; i++ {
		if err := unix.Mkdirat(fd, name, 0o700); err != nil {
			t.Fatal(err)
		}
		nfd, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = nfd
	}
	unix.Close(fd)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	l, err := backup.List(ctx, store, want, nil)
	runtime.ReadMemStats(&after)
	if err != nil || len(l.Complete) != 1 || l.Complete[0].ID != g.ID {
		t.Fatalf("list: %+v %v", l, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Errorf("listing beside a tree %d deep allocated %d KiB", depth, grew>>10)
	}
	if _, warned := takeKeep(t, store, nil, 1); len(warned) != 0 {
		t.Errorf("the backup warned %q", warned)
	}
}
