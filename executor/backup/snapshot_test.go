package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"database/sql"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"testing"
	"time"
)

// writer commits numbered rows to a database until stopped; committed is the last row whose
// commit returned.
type writer struct {
	committed atomic.Int64
	stop      chan struct{}
	done      chan error
}

func startWriter(t *testing.T, file, journal string) *writer {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(60000)&_pragma=journal_mode("+journal+")")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.Exec("CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY, body BLOB)"); err != nil {
		t.Fatal(err)
	}
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		body := bytes.Repeat([]byte("x"), 2000)
		for n := int64(1); ; n++ {
			select {
			case <-w.stop:
				w.done <- db.Close()
				return
			default:
			}
			if _, err := db.Exec("INSERT INTO rows (n, body) VALUES (?, ?)", n, body); err != nil {
				db.Close()
				w.done <- err
				return
			}
			w.committed.Store(n)
		}
	}()
	t.Cleanup(func() { w.halt(t) })
	return w
}

func (w *writer) halt(t *testing.T) {
	select {
	case <-w.stop:
		return
	default:
	}
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Errorf("the writer failed: %v", err)
	}
}

func rowCount(t *testing.T, file string) (count, max int64) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+file)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.QueryRow("SELECT count(*), coalesce(max(n), 0) FROM rows").Scan(&count, &max); err != nil {
		t.Fatal(err)
	}
	return count, max
}

func journalMode(t *testing.T, file string) string {
	db, _ := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	defer db.Close()
	var m string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&m); err != nil {
		t.Errorf("read the journal mode: %v", err)
	}
	return m
}

// A snapshot taken while a writer commits holds every row committed before it began, passes
// quick_check, and leaves the database's journal mode as it was; in WAL and rollback mode.
func TestSnapshotWhileWriting(t *testing.T) {
	for _, mode := range []string{"wal", "delete"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "app.db")
			w := startWriter(t, src, mode)
			for w.committed.Load() < 200 {
				time.Sleep(5 * time.Millisecond)
			}
			before := w.committed.Load()
			dst := filepath.Join(t.TempDir(), "snap.db")
			snap, err := SnapshotDB(context.Background(), src, dst)
			if err != nil {
				t.Fatal(err)
			}
			w.halt(t)
			if snap.JournalMode != mode {
				t.Errorf("journal mode reported %q, want %q", snap.JournalMode, mode)
			}
			if err := QuickCheck(context.Background(), dst); err != nil {
				t.Fatal(err)
			}
			count, max := rowCount(t, dst)
			if max < before || count != max {
				t.Errorf("the snapshot holds rows 1..%d (%d rows); %d were committed before it began", max, count, before)
			}
			if got := journalMode(t, src); got != mode {
				t.Errorf("the database's journal mode is %q after the snapshot, was %q", got, mode)
			}
			if w.committed.Load() <= before {
				t.Error("the writer committed nothing while the snapshot was taken")
			}
		})
	}
}

func TestSnapshotDBs(t *testing.T) {
	vol := t.TempDir()
	os.MkdirAll(filepath.Join(vol, "db"), 0o755)
	os.MkdirAll(filepath.Join(vol, "uploads"), 0o755)
	w := startWriter(t, filepath.Join(vol, "db", "app.db"), "wal")
	for w.committed.Load() < 50 {
		time.Sleep(5 * time.Millisecond)
	}
	os.WriteFile(filepath.Join(vol, "uploads", "a.png"), bytes.Repeat([]byte("p"), 1000), 0o644)
	empty := t.TempDir()
	out := filepath.Join(t.TempDir(), "out")
	vols := []SnapshotVolume{{Dir: vol, DBs: []string{"db/app.db", "missing.db"}}, {Dir: empty}}
	inProcess := func(uid, gid int, src, dst string) (*DBSnapshot, error) {
		return SnapshotDB(context.Background(), src, dst)
	}
	rep, err := SnapshotDBs(context.Background(), out, vols, inProcess)
	if err != nil {
		t.Fatal(err)
	}
	w.halt(t)
	v := rep.Volumes[0]
	if len(v.DBs) != 2 || v.DBs[0].Error != "" || v.DBs[0].File == "" || v.DBs[0].JournalMode != "wal" || v.DBs[1].Error == "" {
		t.Fatalf("databases: %+v", v.DBs)
	}
	// Others: uploads/ and uploads/a.png; db/ is a directory on the database's path.
	if v.Others != 2 || v.OtherBytes != 1000 || len(v.Dirs) != 1 || v.Dirs[0].Path != "db" {
		t.Errorf("volume: others %d (%d bytes), dirs %+v", v.Others, v.OtherBytes, v.Dirs)
	}
	ex := v.Excluded()
	for _, f := range []string{"db/app.db", "db/app.db-wal", "db/app.db-shm", "db/app.db-journal"} {
		if !ex[f] {
			t.Errorf("%s is not left out of the volume's copy", f)
		}
	}
	if ex["missing.db"] {
		t.Error("a database without a snapshot is left out of the copy")
	}
	if e := rep.Volumes[1]; e.Others != 0 || len(e.DBs) != 0 || e.snapshotsOnly() {
		t.Errorf("empty volume: %+v", e)
	}
	if err := QuickCheck(context.Background(), filepath.Join(out, v.DBs[0].File)); err != nil {
		t.Error(err)
	}
}

// The archive of a volume with a snapshotted database holds the snapshot at the database's
// path and none of its -wal, -shm or -journal; the other files pass unchanged. A volume with
// nothing else gets its directories from the report.
func TestWithSnapshots(t *testing.T) {
	snapshot := []byte("the snapshot's bytes")
	vr := &VolumeReport{Root: EntryInfo{Mode: 0o755}, Dirs: []EntryInfo{{Path: "db", Mode: 0o700, UID: 1000}},
		DBs: []DBSnapshot{{EntryInfo: EntryInfo{Path: "db/app.db", Mode: 0o600, UID: 1000, GID: 1000}, File: "db-0-0", Size: int64(len(snapshot))}}}
	open := func(_ context.Context, file string) (io.ReadCloser, error) {
		if file != "db-0-0" {
			t.Errorf("opened %q", file)
		}
		return io.NopCloser(bytes.NewReader(snapshot)), nil
	}
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for name, body := range map[string]string{"data/db/app.db": "torn", "data/db/app.db-wal": "wal", "data/db/app.db-shm": "shm", "data/uploads/a": "upload"} {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	for _, tc := range []struct {
		name  string
		inner io.ReadCloser
		want  []string
	}{
		{"with other files", io.NopCloser(&in), []string{"data/db/app.db=the snapshot's bytes", "data/uploads/a=upload"}},
		{"database only", nil, []string{"data/", "data/db/", "data/db/app.db=the snapshot's bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := withSnapshots(context.Background(), "data", tc.inner, vr, open)
			defer rc.Close()
			var got []string
			tr := tar.NewReader(rc)
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(tr)
				e := hdr.Name
				if hdr.Typeflag == tar.TypeReg {
					e += "=" + string(b)
				}
				if hdr.Name == "data/db/app.db" && (hdr.Mode != 0o600 || hdr.Uid != 1000) {
					t.Errorf("the snapshot's owner and mode: %o %d", hdr.Mode, hdr.Uid)
				}
				got = append(got, e)
			}
			sort.Strings(got)
			if len(got) != len(tc.want) {
				t.Fatalf("entries %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("entries %q, want %q", got, tc.want)
				}
			}
		})
	}
}
