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
	var r rawTar
	r.dir("data/")
	r.pax("GNU.sparse.major", "1", "GNU.sparse.minor", "0", "GNU.sparse.name", "data/app.db", "GNU.sparse.realsize", fmt.Sprint(gib))
	sparseMap := []byte(fmt.Sprintf("1\n%d\n1\n", gib-1))
	sparseMap = append(sparseMap, make([]byte, 512-len(sparseMap))...)
	r.header("data/GNUSparseFile.0/app.db", '0', 513, "", false, nil)
	r.data(append(sparseMap, 'X'))
	add(archiveCase{name: "pax sparse 1.0 of 1 GiB", raw: r.end(), db: true, wantErr: "too large"})

	// GNU sparse format 0.1: the map in the PAX records.
	r = rawTar{}
	r.dir("data/")
	r.pax("GNU.sparse.size", fmt.Sprint(gib), "GNU.sparse.numblocks", "1", "GNU.sparse.map", fmt.Sprintf("%d,1", gib-1), "GNU.sparse.name", "data/app.db")
	r.header("data/sparse", '0', 1, "", false, nil)
	r.data([]byte("X"))
	add(archiveCase{name: "pax sparse 0.1 of 1 GiB", raw: r.end(), db: true, wantErr: "too large"})

	// Old GNU sparse ('S'): skipped as an entry type the deployer never writes.
	r = rawTar{}
	r.dir("data/")
	r.header("data/app.db", 'S', 1, "", true, func(b []byte) {
		copy(b[386:398], fmt.Sprintf("%011o\x00", gib-1))
		copy(b[398:410], fmt.Sprintf("%011o\x00", 1))
		copy(b[483:495], fmt.Sprintf("%011o\x00", gib))
	})
	r.data([]byte("X"))
	add(archiveCase{name: "old GNU sparse of 1 GiB", raw: r.end(), report: []string{`skipped 1 (entry type 'S'): data/app.db`}})

	// A header that claims 1 TiB, followed by 10 bytes.
	r = rawTar{}
	r.dir("data/")
	r.header("data/app.db", '0', 1<<40, "", false, nil)
	r.data([]byte("0123456789"))
	add(archiveCase{name: "a header claiming 1 TiB", raw: r.end(), db: true, wantErr: "too large"})

	// A header that claims more than the stream holds, within the declared size.
	r = rawTar{}
	r.dir("data/")
	r.header("data/f", '0', 100000, "", false, nil)
	r.data([]byte("0123456789"))
	add(archiveCase{name: "a header claiming more than the stream", raw: r.Bytes(), declared: 1 << 20, wantErr: "read"})

	// 20000 empty files: fine at their size, refused when the manifest declares half.
	r = rawTar{}
	r.dir("data/")
	for i := 0; i < 20000; i++ {
		r.header(fmt.Sprintf("data/e%d", i), '0', 0, "", false, nil)
	}
	many := r.end()
	add(archiveCase{name: "20000 empty files", raw: many, check: func(t *testing.T, l logical) {
		if l.entries != 20001 {
			t.Errorf("%d entries restored, want 20001", l.entries)
		}
	}})
	add(archiveCase{name: "20000 empty files declared as half", raw: many, declared: int64(len(many) / 2), wantErr: "too large"})

	// A path 2000 directories deep that the archive never made: each is counted.
	r = rawTar{}
	r.dir("data/")
	r.pax("path", "data/"+strings.Repeat("a/", 2000)+"f")
	r.header("data/placeholder", '0', 1, "", false, nil)
	r.data([]byte("x"))
	add(archiveCase{name: "2000 directories the archive does not hold", raw: r.end(), wantErr: "too large"})

	// One file and 5000 hard links to it: the links carry no data.
	r = rawTar{}
	r.dir("data/")
	r.file("data/big", strings.Repeat("b", 64<<10))
	for i := 0; i < 5000; i++ {
		r.header(fmt.Sprintf("data/l%d", i), '1', 0, "data/big", false, nil)
	}
	r.header("data/etc", '2', 0, "/etc", false, nil)
	r.header("data/shadow", '1', 0, "data/etc/shadow", false, nil)
	r.header("data/up", '1', 0, "../../etc/shadow", false, nil)
	add(archiveCase{name: "5000 hard links", raw: r.end(),
		report: []string{"skipped 2 (a hard link to a file the archive does not hold before it): data/shadow, data/up"},
		check: func(t *testing.T, l logical) {
			if l.fileBytes != 64<<10 || l.links != 5000 {
				t.Errorf("%d file bytes and %d links restored, want 65536 and 5000", l.fileBytes, l.links)
			}
		}})

	// Names longer than Linux takes, and longer than the tar reader takes.
	r = rawTar{}
	r.dir("data/")
	r.pax("path", "data/"+strings.Repeat("n", 8000))
	r.header("data/x", '0', 0, "", false, nil)
	r.pax("linkpath", strings.Repeat("l", 8000))
	r.header("data/ln", '2', 0, "", false, nil)
	add(archiveCase{name: "names of 8000 bytes", raw: r.end(), report: []string{"skipped 2 (a name or link target longer than 4096 bytes)"}})
	r = rawTar{}
	r.dir("data/")
	r.header("././@LongLink", 'L', 2<<20, "", true, nil)
	r.data(bytes.Repeat([]byte("n"), 2<<20))
	r.header("data/x", '0', 0, "", true, nil)
	add(archiveCase{name: "a GNU long name of 2 MiB", raw: r.end(), wantErr: "read"})

	// Large PAX records: kept, counted, within what the stream holds.
	r = rawTar{}
	r.dir("data/")
	r.pax("SCHILY.xattr.user.big", strings.Repeat("x", 900<<10), "SCHILY.xattr.security.capability", "\x01\x00\x00\x02")
	r.file("data/f", "body")
	for i := 0; i < 1000; i++ {
		r.pax("comment", strings.Repeat("c", 1000))
	}
	r.file("data/g", "body")
	add(archiveCase{name: "900 KiB of xattrs and 1000 PAX headers in a row", raw: r.end(),
		report: []string{"changed 1 (security extended attributes (file capabilities) dropped): data/f"}})

	// Entries of kinds a restore never makes, by the thousand: the report stays a few lines.
	r = rawTar{}
	r.dir("data/")
	for i := 0; i < 1000; i++ {
		r.pax("comment", "global")
		r.header(fmt.Sprintf("data/g%d", i), 'g', 0, "", false, nil)
	}
	for i := 0; i < 50000; i++ {
		r.header(fmt.Sprintf("data/dev%d", i), '3', 0, "", false, nil)
	}
	add(archiveCase{name: "50000 device nodes and 1000 global headers", raw: r.end(),
		report: []string{"skipped 50000 (a device node): data/dev0, data/dev1, data/dev2, data/dev3, data/dev4 and 49995 more"}})

	// Paths that change kind: a directory replaced by a file, a file used as a directory.
	r = rawTar{}
	r.dir("data/")
	r.dir("data/d/")
	r.file("data/d", "replaces the directory")
	r.file("data/f", "a file")
	r.file("data/f/g", "inside the file")
	r.dir("data/f/")
	add(archiveCase{name: "a directory replaced by a file", raw: r.end(), report: []string{
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
			store, m := planted(t, zst(t, c.raw), declared, c.db)

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
	add := func(name string, build func(r *rawTar)) {
		var r rawTar
		r.dir("data/")
		build(&r)
		cases = append(cases, struct {
			name string
			raw  []byte
		}{name, r.end()})
	}
	add("symlink to a host file", func(r *rawTar) { r.header("data/app.db", '2', 0, secret, false, nil) })
	add("hard link to a host file", func(r *rawTar) { r.header("data/app.db", '1', 0, secret, false, nil) })
	add("hard link that climbs", func(r *rawTar) {
		r.header("data/app.db", '1', 0, "data/../../../../../../"+strings.TrimPrefix(secret, "/"), false, nil)
	})
	add("climbing name", func(r *rawTar) {
		r.file("data/../../../../../../"+strings.TrimPrefix(host, "/")+"/app.db", "overwrite")
	})
	add("absolute name", func(r *rawTar) { r.file(filepath.Join(host, "app.db"), "overwrite") })
	add("through a symbolic link", func(r *rawTar) {
		r.header("data/sub", '2', 0, host, false, nil)
		r.file("data/sub/app.db", "through the link")
	})
	add("the database replaced by a link after it", func(r *rawTar) {
		r.file("data/app.db", "SQLite format 3\x00")
		r.header("data/app.db", '2', 0, secret, false, nil)
	})
	add("wal through a symlink", func(r *rawTar) { r.header("data/app.db-wal", '2', 0, secret, false, nil) })
	before := snapshotDir(t, host)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			store, m := planted(t, zst(t, c.raw), int64(len(c.raw)), true)
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
