package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/tartest"
)

// archiveCase is an archive written by someone with write access to the store.
type archiveCase struct {
	name     string
	raw      []byte
	declared int64 // the manifest's uncompressed size; len(raw) when 0
	db       bool  // the manifest lists a database at app.db, so verify extracts it
	wantErr  string
	report   []string // what the restore must say it skipped or changed
	check    func(t *testing.T, l logical)
}

func hostileArchives(t testing.TB) []archiveCase {
	const gib = 1 << 30
	var cases []archiveCase
	add := func(c archiveCase) { cases = append(cases, c) }

	// A PAX sparse file (GNU format 1.0): 1 GiB of logical size from a 1-byte fragment.
	var r tartest.Raw
	r.Dir("data/")
	r.Sparse("data/app.db", gib)
	add(archiveCase{name: "pax sparse 1.0 of 1 GiB", raw: r.End(), db: true, wantErr: "too large"})

	// GNU sparse format 0.1: the map in the PAX records.
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("GNU.sparse.size", fmt.Sprint(gib), "GNU.sparse.numblocks", "1", "GNU.sparse.map", fmt.Sprintf("%d,1", gib-1), "GNU.sparse.name", "data/app.db")
	r.Header("data/sparse", '0', 1, "", false, nil)
	r.Data([]byte("X"))
	add(archiveCase{name: "pax sparse 0.1 of 1 GiB", raw: r.End(), db: true, wantErr: "too large"})

	// Old GNU sparse ('S'): skipped as an entry type the deployer never writes.
	r = tartest.Raw{}
	r.Dir("data/")
	r.Header("data/app.db", 'S', 1, "", true, func(b []byte) {
		copy(b[386:398], fmt.Sprintf("%011o\x00", gib-1))
		copy(b[398:410], fmt.Sprintf("%011o\x00", 1))
		copy(b[483:495], fmt.Sprintf("%011o\x00", gib))
	})
	r.Data([]byte("X"))
	add(archiveCase{name: "old GNU sparse of 1 GiB", raw: r.End(), report: []string{`skipped 1 (entry type 'S'): data/app.db`}})

	// A header that claims 1 TiB, followed by 10 bytes.
	r = tartest.Raw{}
	r.Dir("data/")
	r.Header("data/app.db", '0', 1<<40, "", false, nil)
	r.Data([]byte("0123456789"))
	add(archiveCase{name: "a header claiming 1 TiB", raw: r.End(), db: true, wantErr: "too large"})

	// A header that claims more than the stream holds, within the declared size.
	r = tartest.Raw{}
	r.Dir("data/")
	r.Header("data/f", '0', 100000, "", false, nil)
	r.Data([]byte("0123456789"))
	add(archiveCase{name: "a header claiming more than the stream", raw: r.Bytes(), declared: 1 << 20, wantErr: "read"})

	// 20000 empty files: fine at their size, refused when the manifest declares half.
	r = tartest.Raw{}
	r.Dir("data/")
	for i := 0; i < 20000; i++ {
		r.Header(fmt.Sprintf("data/e%d", i), '0', 0, "", false, nil)
	}
	many := r.End()
	add(archiveCase{name: "20000 empty files", raw: many, check: func(t *testing.T, l logical) {
		if l.entries != 20001 {
			t.Errorf("%d entries restored, want 20001", l.entries)
		}
	}})
	add(archiveCase{name: "20000 empty files declared as half", raw: many, declared: int64(len(many) / 2), wantErr: "too large"})

	// A path 2000 directories deep that the archive never made: each is counted.
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("path", "data/"+strings.Repeat("a/", 2000)+"f")
	r.Header("data/placeholder", '0', 1, "", false, nil)
	r.Data([]byte("x"))
	add(archiveCase{name: "2000 directories the archive does not hold", raw: r.End(), wantErr: "too large"})

	// One file and 5000 hard links to it: the links carry no data.
	r = tartest.Raw{}
	r.Dir("data/")
	r.File("data/big", strings.Repeat("b", 64<<10))
	for i := 0; i < 5000; i++ {
		r.Header(fmt.Sprintf("data/l%d", i), '1', 0, "data/big", false, nil)
	}
	r.Header("data/etc", '2', 0, "/etc", false, nil)
	r.Header("data/shadow", '1', 0, "data/etc/shadow", false, nil)
	r.Header("data/up", '1', 0, "../../etc/shadow", false, nil)
	add(archiveCase{name: "5000 hard links", raw: r.End(),
		report: []string{"skipped 2 (a hard link to a file the archive does not hold before it): data/shadow, data/up"},
		check: func(t *testing.T, l logical) {
			if l.fileBytes != 64<<10 || l.links != 5000 {
				t.Errorf("%d file bytes and %d links restored, want 65536 and 5000", l.fileBytes, l.links)
			}
		}})

	// Names longer than Linux takes, and longer than the tar reader takes.
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("path", "data/"+strings.Repeat("n", 8000))
	r.Header("data/x", '0', 0, "", false, nil)
	r.PAX("linkpath", strings.Repeat("l", 8000))
	r.Header("data/ln", '2', 0, "", false, nil)
	add(archiveCase{name: "names of 8000 bytes", raw: r.End(), report: []string{"skipped 2 (a name or link target of 4096 bytes or more)"}})
	// Names Linux does not make, which the engine would fail on after the live release stopped:
	// a name of 256 bytes, a path of 4096, a hard link named so.
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("path", "data/"+strings.Repeat("c", 256))
	r.Header("data/x", '0', 0, "", false, nil)
	r.PAX("path", "data/"+strings.Repeat("d/", 2044)+"f")
	r.Header("data/x", '0', 0, "", false, nil)
	r.File("data/ok", "fine")
	r.PAX("linkpath", "data/"+strings.Repeat("c", 256))
	r.Header("data/hl", '1', 0, "", false, nil)
	add(archiveCase{name: "a name of 256 bytes and a path of 4096", raw: r.End(),
		report: []string{"skipped 3 (a path of 4096 bytes or more, or a name over 255 bytes, which Linux does not make)"}})
	// Owners that are no user or group ID: negative, or beyond 2^31-1 (2^32 would be root).
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("uid", "4294967296")
	r.File("data/root", "x")
	r.PAX("gid", "-5")
	r.File("data/neg", "x")
	r.PAX("uid", "2147483648")
	r.File("data/big", "x")
	r.File("data/ok", "x")
	add(archiveCase{name: "owners that are not IDs", raw: r.End(),
		report: []string{"skipped 3 (an owner that is not a user or group ID): data/root, data/neg, data/big"},
		check: func(t *testing.T, l logical) {
			if fmt.Sprint(l.names) != "[volume/ volume/ok]" {
				t.Errorf("made %v", l.names)
			}
		}})
	// Extended attributes Linux refuses (too large for ext4's block, beyond 64 KiB, a malformed
	// ACL) or that only root's overlay reads: the engine would fail on them after the stop.
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("SCHILY.xattr.user.a", strings.Repeat("a", 5000))
	r.File("data/a", "x")
	r.PAX("SCHILY.xattr.user.big", strings.Repeat("b", 70000))
	r.File("data/b", "x")
	r.PAX("SCHILY.xattr.system.posix_acl_access", "junk")
	r.File("data/acl", "x")
	r.PAX("SCHILY.xattr.trusted.overlay.opaque", "y")
	r.Dir("data/opaque/")
	add(archiveCase{name: "extended attributes Linux refuses", raw: r.End(),
		report: []string{"changed 4 (extended attributes dropped): data/a, data/b, data/acl, data/opaque/"},
		check: func(t *testing.T, l logical) {
			if l.xattrs != 0 {
				t.Errorf("%d extended attributes reach the engine", l.xattrs)
			}
		}})
	r = tartest.Raw{}
	r.Dir("data/")
	r.Header("././@LongLink", 'L', 2<<20, "", true, nil)
	r.Data(bytes.Repeat([]byte("n"), 2<<20))
	r.Header("data/x", '0', 0, "", true, nil)
	add(archiveCase{name: "a GNU long name of 2 MiB", raw: r.End(), wantErr: "read"})

	// Large PAX records: kept, counted, within what the stream holds.
	r = tartest.Raw{}
	r.Dir("data/")
	r.PAX("SCHILY.xattr.user.big", strings.Repeat("x", 900<<10), "SCHILY.xattr.security.capability", "\x01\x00\x00\x02")
	r.File("data/f", "body")
	for i := 0; i < 1000; i++ {
		r.PAX("comment", strings.Repeat("c", 1000))
	}
	r.File("data/g", "body")
	add(archiveCase{name: "900 KiB of xattrs and 1000 PAX headers in a row", raw: r.End(),
		report: []string{"changed 1 (security extended attributes (file capabilities) dropped): data/f"}})

	// Entries of kinds a restore never makes, by the thousand: the report stays a few lines.
	r = tartest.Raw{}
	r.Dir("data/")
	for i := 0; i < 1000; i++ {
		r.PAX("comment", "global")
		r.Header(fmt.Sprintf("data/g%d", i), 'g', 0, "", false, nil)
	}
	for i := 0; i < 50000; i++ {
		r.Header(fmt.Sprintf("data/dev%d", i), '3', 0, "", false, nil)
	}
	add(archiveCase{name: "50000 device nodes and 1000 global headers", raw: r.End(),
		report: []string{"skipped 50000 (a device node): data/dev0, data/dev1, data/dev2, data/dev3, data/dev4 and 49995 more"}})

	// Paths that change kind: a directory replaced by a file, a file used as a directory.
	r = tartest.Raw{}
	r.Dir("data/")
	r.Dir("data/d/")
	r.File("data/d", "replaces the directory")
	r.File("data/f", "a file")
	r.File("data/f/g", "inside the file")
	r.Dir("data/f/")
	add(archiveCase{name: "a directory replaced by a file", raw: r.End(), report: []string{
		"skipped 1 (it would replace a directory of the archive): data/d", "skipped 1 (inside a file of the archive): data/f/g",
		"skipped 1 (a directory where the archive made a file): data/f/"}})

	// A decompression bomb: 16 MiB of zeros, declared as 10 KiB.
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "data/app.db", Mode: 0o644, Size: 16 << 20})
	tw.Write(make([]byte, 16<<20))
	tw.Close()
	add(archiveCase{name: "16 MiB of zeros declared as 10 KiB", raw: b.Bytes(), declared: 10 << 10, db: true, wantErr: "too large"})
	return cases
}

// A small archive that expands past its declared size stops there, on the way into a volume
// and in verify: what Tame hands to the engine and what verify writes add up, counted as
// logical sizes (sparse files at their full size, every entry and every directory it needs),
// to no more than the manifest declares. Refused archives are refused by verify, which runs
// before a restore touches anything.
func TestHostileArchivesAreBounded(t *testing.T) {
	ctx := context.Background()
	cases := hostileArchives(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			declared := c.declared
			if declared == 0 {
				declared = int64(len(c.raw))
			}
			store, m := planted(t, &backup.Local{Dir: t.TempDir()}, zst(t, c.raw), declared, c.db)

			// The restore's side: what reaches the engine.
			rc, err := backup.OpenVolume(ctx, store, m, "data", nil, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			l, rep, tameErr := restoreThrough(t, rc, declared)
			if l.bytes > declared {
				t.Errorf("the restore handed the engine %d logical bytes for an archive that declares %d", l.bytes, declared)
			}
			checkErr(t, "restore", tameErr, c.wantErr)
			if c.wantErr == "" {
				text := strings.Join(rep.Lines(), "\n")
				for _, w := range c.report {
					if !strings.Contains(text, w) {
						t.Errorf("report lacks %q:\n%s", w, text)
					}
				}
				if len(text) > 4096 {
					t.Errorf("the report is %d bytes long", len(text))
				}
				if c.check != nil {
					c.check(t, l)
				}
			}

			// The verify's side: its scratch directory, and what it leaves.
			tmp := t.TempDir()
			err = backup.Verify(ctx, store, m, nil, tmp)
			if c.wantErr == "" && c.db {
				checkErr(t, "verify", err, "")
			} else if c.wantErr != "" {
				checkErr(t, "verify", err, c.wantErr)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("verify left %d entries in its temporary directory", len(left))
			}
			rc, err = backup.OpenVolume(ctx, store, m, "data", nil, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			scratch := t.TempDir()
			backup.VerifyArchive(rc, []backup.DB{{Name: "main", Volume: "data", Path: "app.db"}}, scratch, declared)
			rc.Close()
			if used := dirSize(t, scratch); used > declared {
				t.Errorf("verify wrote %d bytes for an archive that declares %d", used, declared)
			}
		})
	}
	t.Logf("%d hostile archives", len(cases))
}

func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch want {
	case "":
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case "too large":
		if !errors.Is(err, backup.ErrTooLarge) {
			t.Errorf("%s: %v, want it refused as larger than declared", what, err)
		}
	case "read":
		if err == nil || !strings.Contains(err.Error(), "read the archive") {
			t.Errorf("%s: %v, want the archive refused as unreadable", what, err)
		}
	}
}

// Nothing read from a store picks a path on the deployer's machine: an archive's database
// entry that is a symbolic link or a hard link to a host file, or climbs out, or passes
// through a symbolic link, is never followed; verify writes only under names it chooses, in
// its own scratch directory, and leaves nothing behind.
func TestVerifyPicksNoPath(t *testing.T) {
	ctx := context.Background()
	host := t.TempDir()
	secret := filepath.Join(host, "secret.db")
	os.WriteFile(secret, []byte("a host file"), 0o600)
	var cases []struct {
		name string
		raw  []byte
	}
	add := func(name string, build func(r *tartest.Raw)) {
		var r tartest.Raw
		r.Dir("data/")
		build(&r)
		cases = append(cases, struct {
			name string
			raw  []byte
		}{name, r.End()})
	}
	add("symlink to a host file", func(r *tartest.Raw) { r.Header("data/app.db", '2', 0, secret, false, nil) })
	add("hard link to a host file", func(r *tartest.Raw) { r.Header("data/app.db", '1', 0, secret, false, nil) })
	add("hard link that climbs", func(r *tartest.Raw) {
		r.Header("data/app.db", '1', 0, "data/../../../../../../"+strings.TrimPrefix(secret, "/"), false, nil)
	})
	add("climbing name", func(r *tartest.Raw) {
		r.File("data/../../../../../../"+strings.TrimPrefix(host, "/")+"/app.db", "overwrite")
	})
	add("absolute name", func(r *tartest.Raw) { r.File(filepath.Join(host, "app.db"), "overwrite") })
	add("through a symbolic link", func(r *tartest.Raw) {
		r.Header("data/sub", '2', 0, host, false, nil)
		r.File("data/sub/app.db", "through the link")
	})
	add("the database replaced by a link after it", func(r *tartest.Raw) {
		r.File("data/app.db", "SQLite format 3\x00")
		r.Header("data/app.db", '2', 0, secret, false, nil)
	})
	add("wal through a symlink", func(r *tartest.Raw) { r.Header("data/app.db-wal", '2', 0, secret, false, nil) })
	before := snapshotDir(t, host)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store, m := planted(t, &backup.Local{Dir: t.TempDir()}, zst(t, c.raw), int64(len(c.raw)), true)
			tmp := t.TempDir()
			err := backup.Verify(ctx, store, m, nil, tmp)
			if err == nil || !strings.Contains(err.Error(), "is not in volume data") {
				t.Errorf("verify: %v, want the database missing", err)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("verify left %d entries", len(left))
			}
			if got := snapshotDir(t, host); got != before {
				t.Errorf("the host directory changed:\n%s\nwas\n%s", got, before)
			}
		})
	}
	t.Logf("%d hostile archives", len(cases))
}

func snapshotDir(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			body, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s %v %q\n", p, info.Mode(), body)
		}
		return nil
	})
	return b.String()
}

// An archive of directories declares 512 bytes for each and takes a 4 KiB block and an inode
// for each: verify says what the files take on a disk, and a restore checks the volume has room
// for the larger of that and the declared size, and the inodes, before it empties it. An
// extended attribute is dropped (a restore writes none), so it takes nothing.
func TestDiskEstimate(t *testing.T) {
	var r tartest.Raw
	r.Dir("data/")
	for i := 0; i < 2000; i++ {
		r.Dir(fmt.Sprintf("data/d%d/", i))
	}
	r.File("data/small", "ten bytes!")
	r.PAX("SCHILY.xattr.user.note", "x")
	r.File("data/tagged", strings.Repeat("t", 5000))
	raw := r.End()
	store, m := planted(t, &backup.Local{Dir: t.TempDir()}, zst(t, raw), int64(len(raw)), false)
	v, err := backup.Download(context.Background(), store, m, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	want := backup.VolumeNeeds{Bytes: 2001*4096 + 4096 + 2*4096, Inodes: 2002}
	if got := v.Needs["data"]; got != want {
		t.Errorf("needs %+v, want %+v (the archive declares %d bytes)", got, want, len(raw))
	}
}

// An archive of more entries than the deployer remembers is refused, skipped ones included.
func TestArchiveEntriesBound(t *testing.T) {
	defer backup.SetMaxArchiveEntries(1000)()
	for _, typ := range []byte{'0', '3'} { // files, then device nodes (skipped, still counted)
		var r tartest.Raw
		r.Dir("data/")
		for i := 0; i < 1200; i++ {
			r.Header(fmt.Sprintf("data/e%d", i), typ, 0, "", false, nil)
		}
		raw := r.End()
		store, m := planted(t, newMemStore(), zst(t, raw), int64(len(raw)), false)
		err := backup.Verify(context.Background(), store, m, nil, t.TempDir())
		if !errors.Is(err, backup.ErrTooLarge) || !strings.Contains(err.Error(), "more than 1000 entries") {
			t.Errorf("type %c: %v", typ, err)
		}
	}
}
