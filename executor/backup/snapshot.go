package backup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"modernc.org/sqlite"
)

// Online snapshots of SQLite databases. A helper container mounts the service's volumes and
// runs the deployer (internal sqlite-snapshot): each declared database is copied with SQLite's
// backup API in one read transaction while the live release keeps running. In WAL mode the
// app's writers never wait for it; in rollback-journal mode they wait while it reads, and how
// long it read is reported. The journal mode is never changed: the snapshot is the database's
// pages as they were, header included.

// SnapshotVolume is one mounted volume and the databases declared in it.
type SnapshotVolume struct {
	Dir string   // where the helper mounts it
	DBs []string // paths relative to the volume
}

// SnapshotReport is what the helper found and wrote, per volume in the order asked.
type SnapshotReport struct {
	Volumes []VolumeReport `json:"volumes"`
}

// VolumeReport sizes a volume and lists its databases' snapshots.
type VolumeReport struct {
	Root       EntryInfo    `json:"root"`
	Dirs       []EntryInfo  `json:"dirs,omitempty"` // directories on the databases' paths
	Bytes      int64        `json:"bytes"`          // every regular file
	OtherBytes int64        `json:"other_bytes"`    // files other than the databases and their -wal, -shm, -journal
	Others     int          `json:"others"`         // entries other than those and their directories
	DBs        []DBSnapshot `json:"dbs"`
}

// EntryInfo is what a restore needs to recreate an entry as it was.
type EntryInfo struct {
	Path    string    `json:"path"` // relative to the volume
	Mode    int64     `json:"mode"`
	UID     int       `json:"uid"`
	GID     int       `json:"gid"`
	ModTime time.Time `json:"mtime"`
}

// DBSnapshot is one database's snapshot, or why there is none.
type DBSnapshot struct {
	EntryInfo
	File        string  `json:"file,omitempty"` // the snapshot's name in the output directory
	Size        int64   `json:"size"`
	JournalMode string  `json:"journal_mode,omitempty"`
	HeldSeconds float64 `json:"held_seconds"`          // the read transaction's length: what writers may wait in rollback-journal mode
	QuickCheck  string  `json:"quick_check,omitempty"` // of the snapshot: "ok", or what is wrong
	Error       string  `json:"error,omitempty"`
}

// sidecars are the files SQLite keeps beside a database: never part of a snapshot's volume.
var sidecars = []string{"", "-wal", "-shm", "-journal"}

// Excluded lists the files a volume's copy leaves out once its databases are snapshotted.
func (r *VolumeReport) Excluded() map[string]bool {
	out := map[string]bool{}
	for _, db := range r.DBs {
		if db.Error == "" {
			for _, s := range sidecars {
				out[path.Clean(db.Path)+s] = true
			}
		}
	}
	return out
}

// SnapshotDBs snapshots every database of the volumes into out (db-V-I for volume V's I-th
// database) and sizes the volumes. Each database is read as its owner (a child process run as
// that user, through runAs), so that any file SQLite creates beside it belongs to the app.
// A database that cannot be snapshotted is reported, not fatal: the caller decides.
func SnapshotDBs(ctx context.Context, out string, vols []SnapshotVolume, runAs func(uid, gid int, src, dst string) (*DBSnapshot, error)) (*SnapshotReport, error) {
	// The children write here as the databases' owners.
	if err := os.MkdirAll(out, 0o777); err != nil {
		return nil, err
	}
	if err := os.Chmod(out, 0o777); err != nil {
		return nil, err
	}
	rep := &SnapshotReport{}
	for v, vol := range vols {
		vr, err := sizeVolume(vol)
		if err != nil {
			return nil, err
		}
		for i, p := range vol.DBs {
			snap := DBSnapshot{EntryInfo: EntryInfo{Path: path.Clean(p)}}
			src := filepath.Join(vol.Dir, filepath.FromSlash(path.Clean("/"+p)))
			info, err := os.Lstat(src)
			switch {
			case err != nil:
				snap.Error = fmt.Sprintf("%s is not in the volume", p)
			case !info.Mode().IsRegular():
				snap.Error = fmt.Sprintf("%s is not a regular file", p)
			default:
				snap.EntryInfo = entryInfo(snap.Path, info)
				name := fmt.Sprintf("db-%d-%d", v, i)
				dst := filepath.Join(out, name)
				if err := ensureSpace(out, info.Size(), "the snapshot of "+p); err != nil {
					return nil, err
				}
				got, err := runAs(snap.UID, snap.GID, src, dst)
				if err != nil {
					snap.Error = err.Error()
					os.Remove(dst)
					break
				}
				snap.File, snap.Size, snap.JournalMode, snap.HeldSeconds = name, got.Size, got.JournalMode, got.HeldSeconds
				// Checked here, where it was written: the machine running the deployer then
				// need not write the database a second time to check it.
				snap.QuickCheck = "ok"
				if err := QuickCheck(ctx, dst); err != nil {
					snap.QuickCheck = err.Error()
				}
			}
			vr.DBs = append(vr.DBs, snap)
		}
		rep.Volumes = append(rep.Volumes, *vr)
	}
	return rep, nil
}

// sizeVolume walks a volume: its size, what besides the databases it holds, and the
// directories on the databases' paths (recreated with them when nothing else is copied).
func sizeVolume(vol SnapshotVolume) (*VolumeReport, error) {
	info, err := os.Stat(vol.Dir)
	if err != nil {
		return nil, err
	}
	vr := &VolumeReport{Root: entryInfo("", info)}
	dbFiles, dbDirs := map[string]bool{}, map[string]bool{}
	for _, p := range vol.DBs {
		p = path.Clean(p)
		for _, s := range sidecars {
			dbFiles[p+s] = true
		}
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			dbDirs[d] = true
		}
	}
	err = filepath.WalkDir(vol.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == vol.Dir {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, vol.Dir+string(filepath.Separator)))
		info, ierr := d.Info()
		if ierr != nil {
			return nil
		}
		if info.Mode().IsRegular() {
			vr.Bytes += info.Size()
		}
		switch {
		case dbFiles[rel]:
		case dbDirs[rel] && d.IsDir():
			vr.Dirs = append(vr.Dirs, entryInfo(rel, info))
		default:
			vr.Others++
			if info.Mode().IsRegular() {
				vr.OtherBytes += info.Size()
			}
		}
		return nil
	})
	return vr, err
}

func entryInfo(rel string, info fs.FileInfo) EntryInfo {
	e := EntryInfo{Path: rel, Mode: int64(info.Mode().Perm()), ModTime: info.ModTime().UTC()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		e.UID, e.GID = int(st.Uid), int(st.Gid)
	}
	return e
}

// SnapshotDB copies the database at src into a new file dst with SQLite's backup API, in one
// step (one read transaction: a consistent snapshot). It never changes src's contents or its
// journal mode (closing may checkpoint a WAL, as any of the app's own connections would). A
// writer holding the lock is waited for, up to a minute.
func SnapshotDB(ctx context.Context, src, dst string) (*DBSnapshot, error) {
	conn, closeConn, err := openConn(ctx, "file:"+src+"?mode=rw&_pragma=busy_timeout(60000)")
	if err != nil {
		return nil, fmt.Errorf("open %s: %v", src, err)
	}
	defer closeConn()
	snap := &DBSnapshot{}
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&snap.JournalMode); err != nil {
		return nil, fmt.Errorf("not a readable SQLite database: %v", err)
	}
	// The snapshot is written through a connection of its own to the new file, without a
	// journal or fsyncs: it is a scratch copy, read into the backup and removed right after. With
	// SQLite's defaults the whole database would be fsynced at the end, a burst that every
	// commit of the live app on the same disk would wait behind. The copy itself is SQLite's
	// backup API, pulling from the database in one read transaction.
	oc, closeOut, err := openConn(ctx, "file:"+dst+"?_pragma=journal_mode(OFF)&_pragma=synchronous(OFF)")
	if err != nil {
		return nil, fmt.Errorf("create %s: %v", dst, err)
	}
	defer closeOut()
	start := time.Now()
	err = oc.Raw(func(dc any) error {
		rc, ok := dc.(interface {
			NewRestore(string) (*sqlite.Backup, error)
		})
		if !ok {
			return errors.New("this SQLite driver has no backup API")
		}
		deadline := time.Now().Add(time.Minute)
		for {
			start = time.Now()
			b, err := rc.NewRestore("file:" + src + "?mode=rw")
			if err != nil {
				return err
			}
			_, err = b.Step(-1)
			if ferr := b.Finish(); err == nil {
				err = ferr
			}
			if err == nil || !busy(err) || time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	snap.HeldSeconds = time.Since(start).Seconds()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %v", err)
	}
	info, err := os.Stat(dst)
	if err != nil {
		return nil, err
	}
	snap.Size = info.Size()
	return snap, nil
}

// openConn opens one connection to the SQLite database at dsn.
func openConn(ctx context.Context, dsn string) (*sql.Conn, func(), error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return conn, func() { conn.Close(); db.Close() }, nil
}

func busy(err error) bool {
	s := err.Error()
	return strings.Contains(s, "SQLITE_BUSY") || strings.Contains(s, "SQLITE_LOCKED") || strings.Contains(s, "database is locked")
}
