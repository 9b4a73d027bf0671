package backup

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// A volume is cloned whole: the database from a snapshot taken while its writer holds it open
// (its rows committed so far, no -wal or -shm beside it), every other file with its owner and
// mode, links as links; the source is left as it was.
func TestCloneVolume(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("owners can only be kept by root (the helper container runs as root)")
	}
	src, dst := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(src, "db"), 0o755)
	os.MkdirAll(filepath.Join(src, "uploads", "2026"), 0o750)
	os.WriteFile(filepath.Join(src, "uploads", "2026", "a.pdf"), []byte("%PDF uploaded"), 0o640)
	os.Symlink("2026/a.pdf", filepath.Join(src, "uploads", "latest"))
	for _, p := range []string{"uploads", "uploads/2026", "uploads/2026/a.pdf", "db"} {
		os.Lchown(filepath.Join(src, p), 1000, 1000)
	}
	file := filepath.Join(src, "db", "app.db")
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=journal_mode(wal)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("CREATE TABLE rows (n INTEGER PRIMARY KEY, note TEXT)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		db.Exec("INSERT INTO rows (note) VALUES ('x')")
	}
	for _, s := range []string{"", "-wal", "-shm"} {
		os.Lchown(file+s, 1000, 1000)
	}
	if _, err := os.Stat(file + "-wal"); err != nil {
		t.Fatalf("the writer's WAL should be there while it runs: %v", err)
	}
	var asUID []int
	snaps, err := CloneVolume(context.Background(), src, dst, []string{"db/app.db"}, func(uid, gid int, from, to string) (*DBSnapshot, error) {
		asUID = append(asUID, uid)
		return SnapshotDB(context.Background(), from, to)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].File != "db/app.db" || snaps[0].JournalMode != "wal" || len(asUID) != 1 || asUID[0] != 1000 {
		t.Fatalf("snapshots %+v, taken as %v", snaps, asUID)
	}
	for _, s := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Lstat(filepath.Join(dst, "db", "app.db"+s)); err == nil {
			t.Errorf("app.db%s was copied beside the snapshot", s)
		}
	}
	for p, want := range map[string]struct {
		uid  int
		mode os.FileMode
	}{
		"uploads":            {1000, os.ModeDir | 0o750},
		"uploads/2026/a.pdf": {1000, 0o640},
		"db":                 {1000, os.ModeDir | 0o755},
		"db/app.db":          {1000, 0o644},
	} {
		info, err := os.Lstat(filepath.Join(dst, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if uid := int(info.Sys().(*syscall.Stat_t).Uid); uid != want.uid || info.Mode() != want.mode {
			t.Errorf("%s: owner %d mode %v, want %d %v", p, uid, info.Mode(), want.uid, want.mode)
		}
	}
	if target, err := os.Readlink(filepath.Join(dst, "uploads", "latest")); err != nil || target != "2026/a.pdf" {
		t.Errorf("the link: %q %v", target, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "uploads", "2026", "a.pdf")); string(b) != "%PDF uploaded" {
		t.Errorf("the upload: %q", b)
	}
	clone, err := sql.Open("sqlite", "file:"+filepath.Join(dst, "db", "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer clone.Close()
	var n int
	if err := clone.QueryRow("SELECT count(*) FROM rows").Scan(&n); err != nil || n != 100 {
		t.Errorf("the clone holds %d rows (%v), want 100", n, err)
	}
	// The live database goes on, untouched by its clone.
	if _, err := db.Exec("INSERT INTO rows (note) VALUES ('after')"); err != nil {
		t.Errorf("the live database after the clone: %v", err)
	}
	// A database that is not in the volume is an error, not an empty clone.
	if _, err := CloneVolume(context.Background(), src, t.TempDir(), []string{"db/missing.db"}, nil); err == nil {
		t.Error("a missing database was cloned")
	}
}
