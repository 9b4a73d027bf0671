package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Source is what a backup needs of the engine.
type Source interface {
	// CopyFrom streams a tar of path in the container (the engine's copy API; works on a
	// paused container).
	CopyFrom(ctx context.Context, containerID, path string) (io.ReadCloser, error)
	Pause(ctx context.Context, containerID string) error
	Unpause(ctx context.Context, containerID string) error
	// LogStream streams the container's whole output.
	LogStream(ctx context.Context, containerID string) (io.ReadCloser, error)
}

// Volume is a volume to back up: its name, where the container mounts it, and how its files
// (other than the databases, when they are snapshotted) are read: "pause" or "none"; empty
// takes the request's Consistency.
type Volume struct {
	Name        string
	Target      string
	Consistency string
}

// DB is a SQLite database declared in a volume; Check runs quick_check on what was backed up.
type DB struct {
	Name   string
	Volume string
	Path   string // relative to the volume
	Check  bool
}

// ErrNoSnapshots says the snapshot helper could not run (an older deployer as docker.proxy_image,
// say): the backup is then taken as before, databases with their volumes.
var ErrNoSnapshots = errors.New("the snapshot helper could not run")

// Snapshotter takes a backup's online SQLite snapshots and sizes its volumes (the executor runs
// it in a helper container).
type Snapshotter interface {
	// Snapshot sizes the volumes and snapshots the databases declared in them, in that order.
	Snapshot(ctx context.Context, vols []Volume, dbs []DB) (*SnapshotReport, error)
	// Open streams a file the snapshot wrote (DBSnapshot.File).
	Open(ctx context.Context, file string) (io.ReadCloser, error)
	// Close removes what the snapshot left.
	Close()
}

// Request is one backup to take.
type Request struct {
	Store          Store
	Source         Source
	Project        string
	Service        string
	Release        int
	Image, ImageID string
	ContainerID    string
	Volumes        []Volume
	Consistency    string // pause or none: the default of each volume
	Logs           bool
	SQLite         []DB // the databases declared in the volumes
	// Snapshots, when set, snapshots the databases online and sizes the volumes first: the
	// databases' files are then left out of their volumes' copies and never paused. Nil: the
	// databases are copied with their volumes, as the volumes' consistency says.
	Snapshots Snapshotter
	Keep      int // complete backups kept per service; 0 keeps all
	// Lenient records a failed quick_check in the manifest instead of failing the backup: for
	// the backup of the current data before a restore, which may be the damage being undone.
	Lenient         bool
	DeployerVersion string
	Reason          string
	TempDir         string // for the spool of a paused copy; os.TempDir() when empty
	Progress        func(Progress)
	Warn            func(string) // what the operator should know about how the backup was taken
	// Keys encrypt the archives and logs (age recipients) and sign the manifest; nil: neither.
	Keys *Keys
	// Migration is the record of the migration this backup is taken before, kept in the
	// manifest (nil for none).
	Migration *MigrationRecord
	// CopyDir, when set, is a directory of the deployer's where each volume's archive is also
	// written, compressed and never encrypted (OpenCopy reads it): a restore puts the data back
	// from this copy, not from the store, which others may have changed since.
	CopyDir string
}

// Progress reports bytes moved for one volume.
type Progress struct {
	Volume string
	Phase  string // read (from the paused container), upload, done
	Bytes  int64
	Total  int64 // what the volume is expected to hold; 0 when unknown
}

// Take backs up the volumes of a live container. With consistency "pause" the container is
// paused while its files are copied to a local spool (disk speed, no network), then unpaused;
// compression, checksums, checks and upload follow. The manifest is written last; on any error
// nothing is left that looks complete. Memory stays bounded whatever the volumes' size.
func Take(ctx context.Context, req Request) (*Manifest, error) {
	if err := req.Store.Check(ctx); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	m := &Manifest{FormatVersion: FormatVersion, ID: now.Format("20060102T150405.000Z") + "-r" + strconv.Itoa(req.Release),
		Project: req.Project, Service: req.Service, Release: req.Release, Image: req.Image, ImageID: req.ImageID, Created: now,
		DeployerVersion: req.DeployerVersion, Reason: req.Reason, Consistency: req.Consistency, Migration: req.Migration,
		Store: storeIdentity(req.Store)}
	if req.Keys.encrypts() {
		m.Encryption = "age"
	}
	if req.Progress == nil {
		req.Progress = func(Progress) {}
	}
	if req.Warn == nil {
		req.Warn = func(string) {}
	}
	t := &taking{req: req, m: m, dir: Dir(req.Project, req.Service) + m.ID + "/", waitSpool: func() error { return nil }}
	defer t.cleanup()
	if err := t.snapshot(ctx); err != nil {
		return nil, err
	}
	if err := t.sources(ctx); err != nil {
		return nil, err
	}
	if err := t.volumes(ctx); err != nil {
		return nil, err
	}
	if err := t.waitSpool(); err != nil {
		return nil, err
	}
	if err := t.logs(ctx); err != nil {
		return nil, err
	}
	if key := req.Keys.signingKey(); key != nil {
		// The tag that lets a listing tell this backup from junk before reading anything.
		if err := req.Store.Put(ctx, t.dir+tagName(key, m.Store, m.Project, m.Service, m.ID), strings.NewReader("")); err != nil {
			return nil, fmt.Errorf("signing tag: %w", err)
		}
		m.Signature = m.sign(key)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := req.Store.Put(ctx, t.dir+ManifestName, strings.NewReader(string(b))); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if req.Keep > 0 {
		// Retention is housekeeping: the backup is complete whatever it finds, so what stops
		// it (a store flooded past the listing bound, say) is said, and the backup stands.
		pctx, cancel := context.WithTimeout(ctx, pruneDeadline)
		rep, err := Prune(pctx, req.Store, Expect{Project: req.Project, Service: req.Service, DBs: req.SQLite}, req.Keys, req.Keep, m.ID)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("the prune did not finish within %s (a store that answers that slowly is not answering), and was stopped", pruneDeadline)
		}
		if err != nil {
			req.Warn(fmt.Sprintf("backup %s is complete, but old backups were not removed: %v", m.ID, err))
		} else if s := rep.Summary(); s != "" {
			req.Warn(s)
		}
	}
	return m, nil
}

// taking is one backup being taken.
type taking struct {
	req Request
	m   *Manifest
	dir string // the backup's directory in the store
	// sources read each volume: spooled files when paused, the live stream otherwise, with
	// the databases' snapshots in place of their files.
	source []func() (io.ReadCloser, error)
	totals []int64           // each volume's expected bytes, 0 when unknown
	snaps  *SnapshotReport   // nil without online snapshots
	failed map[string]string // database name -> why it has no snapshot (lenient only)
	// waitSpool returns once the copy out of the paused container has ended (and the container
	// runs again), with its error.
	waitSpool func() error
	cleanups  []func()
}

func (t *taking) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

// snapshot snapshots the databases online, before anything is paused: the backup holds every
// transaction committed before it began. A database that cannot be snapshotted fails the backup
// (a lenient one copies its files with the volume instead, and records why).
func (t *taking) snapshot(ctx context.Context) error {
	req := t.req
	t.totals = make([]int64, len(req.Volumes))
	if req.Snapshots == nil {
		return nil
	}
	t.cleanups = append(t.cleanups, req.Snapshots.Close)
	var dbs []DB
	for _, v := range req.Volumes {
		dbs = append(dbs, dbsIn(req.SQLite, v.Name)...)
	}
	rep, err := req.Snapshots.Snapshot(ctx, req.Volumes, dbs)
	if errors.Is(err, ErrNoSnapshots) {
		if len(dbs) > 0 {
			req.Warn(fmt.Sprintf("the SQLite databases are copied with their volumes, not snapshotted online: %v", err))
		}
		return nil
	}
	if err != nil {
		return err
	}
	t.failed = map[string]string{}
	for i, v := range req.Volumes {
		vr := &rep.Volumes[i]
		declared := dbsIn(req.SQLite, v.Name)
		if len(vr.DBs) != len(declared) {
			return fmt.Errorf("volume %s: the snapshot helper reported %d databases for %d", v.Name, len(vr.DBs), len(declared))
		}
		t.totals[i] = vr.OtherBytes
		for j, db := range vr.DBs {
			if db.Error == "" {
				t.totals[i] += db.Size
				continue
			}
			if !req.Lenient {
				return fmt.Errorf("sqlite %q (%s in volume %s): %s", declared[j].Name, declared[j].Path, v.Name, Printable(db.Error))
			}
			t.failed[declared[j].Name] = db.Error
			t.totals[i] = vr.Bytes // copied with the volume: about everything is read
		}
	}
	t.snaps = rep
	return nil
}

func (r *VolumeReport) hasSnapshots() bool {
	for _, db := range r.DBs {
		if db.Error == "" {
			return true
		}
	}
	return false
}

// snapshotsOnly reports whether the volume holds nothing but databases that were snapshotted:
// it is then not read from the container at all.
func (r *VolumeReport) snapshotsOnly() bool {
	for _, db := range r.DBs {
		if db.Error != "" {
			return false
		}
	}
	return len(r.DBs) > 0 && r.Others == 0
}

// consistency is how volume v's files are read.
func (t *taking) consistency(v Volume) string {
	if v.Consistency != "" {
		return v.Consistency
	}
	return t.req.Consistency
}

// sources opens the way each volume is read. A volume holding nothing but snapshotted
// databases is not read from the container at all. Volumes read with consistency pause are
// copied, all in one pause, into spool files, beside compression and upload; an early failure
// of the upload cancels the copy, so the pause never outlives the backup.
func (t *taking) sources(ctx context.Context) error {
	req := t.req
	t.source = make([]func() (io.ReadCloser, error), len(req.Volumes))
	var paused []spooled
	var spool string
	for i, v := range req.Volumes {
		v := v
		var vr *VolumeReport
		if t.snaps != nil && t.snaps.Volumes[i].hasSnapshots() {
			vr = &t.snaps.Volumes[i]
		}
		var inner func() (io.ReadCloser, error)
		switch {
		case vr != nil && vr.snapshotsOnly():
			inner = func() (io.ReadCloser, error) { return nil, nil }
		case t.consistency(v) == "pause":
			if spool == "" {
				dir, err := os.MkdirTemp(req.TempDir, "deployer-backup-")
				if err != nil {
					return fmt.Errorf("backup spool: %w", err)
				}
				spool = dir
				t.cleanups = append(t.cleanups, func() { os.RemoveAll(dir) })
			}
			f := newSpoolFile(filepath.Join(spool, strconv.Itoa(i)+".tar"))
			paused = append(paused, spooled{volume: v, file: f, total: t.totals[i]})
			inner = f.reader
		default:
			inner = func() (io.ReadCloser, error) { return req.Source.CopyFrom(ctx, req.ContainerID, v.Target) }
		}
		t.source[i] = inner
		if vr != nil {
			t.source[i] = func() (io.ReadCloser, error) {
				rc, err := inner()
				if err != nil {
					return nil, err
				}
				return withSnapshots(ctx, path.Base(v.Target), rc, vr, req.Snapshots.Open), nil
			}
		}
	}
	if len(paused) == 0 {
		return nil
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		d, err := pauseAndSpool(sctx, req, paused, req.Progress)
		t.m.PausedSeconds = d.Seconds()
		done <- err
	}()
	var once sync.Once
	var spoolErr error
	t.waitSpool = func() error {
		once.Do(func() { spoolErr = <-done })
		return spoolErr
	}
	t.cleanups = append(t.cleanups, func() { cancel(); t.waitSpool() })
	return nil
}

// spooled is a volume copied out of the paused container.
type spooled struct {
	volume Volume
	file   *spoolFile
	total  int64
}

// volumes compresses (and encrypts) each volume's archive into the store, and checks the SQLite
// databases it holds.
func (t *taking) volumes(ctx context.Context) error {
	req, m := t.req, t.m
	encrypted := m.Encryption != ""
	extract, err := os.MkdirTemp(req.TempDir, "deployer-db-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(extract)
	for i, v := range req.Volumes {
		dbs := dbsIn(req.SQLite, v.Name)
		var snaps []DBSnapshot
		if t.snaps != nil {
			snaps = t.snaps.Volumes[i].DBs
		}
		snapshotted := func(j int) bool { return j < len(snaps) && snaps[j].Error == "" }
		var extracted []DB // the databases copied with the volume, checked as they pass
		for j, db := range dbs {
			if !snapshotted(j) {
				extracted = append(extracted, db)
			}
		}
		rc, err := t.source[i]()
		if err != nil {
			return fmt.Errorf("volume %s: read %s: %w", v.Name, v.Target, err)
		}
		key := archiveKey(v.Name, encrypted)
		total := t.totals[i]
		counted := &CountingReader{R: rc, Report: func(n int64) { req.Progress(Progress{Volume: v.Name, Phase: "upload", Bytes: n, Total: total}) }}
		var copyTo io.WriteCloser
		if req.CopyDir != "" {
			if copyTo, err = os.OpenFile(filepath.Join(req.CopyDir, archiveKey(v.Name, false)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				rc.Close()
				return fmt.Errorf("volume %s: the local copy: %w", v.Name, err)
			}
		}
		f, raw, err := putCompressed(ctx, req.Store, t.dir+key, counted, req.Keys, extracted, extract, copyTo)
		rc.Close()
		if copyTo != nil {
			if cerr := copyTo.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("the local copy: %w", cerr)
			}
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		req.Progress(Progress{Volume: v.Name, Phase: "done", Bytes: raw, Total: raw})
		f.Key = key
		m.Volumes = append(m.Volumes, VolumeArchive{Name: v.Name, Target: v.Target, File: *f, Bytes: raw})
		k := 0 // the index of the next extracted database
		for j, db := range dbs {
			var res string
			var err error
			if snapshotted(j) {
				if res = snaps[j].QuickCheck; res != "ok" {
					err = fmt.Errorf("sqlite %q (%s in volume %s): %s", db.Name, db.Path, db.Volume, Printable(res))
				}
			} else {
				if db.Check {
					res, err = checkExtracted(ctx, extract, k, db)
				}
				k++
			}
			if !db.Check {
				continue
			}
			if err != nil && !req.Lenient {
				return err
			}
			if err != nil {
				res = "failed: " + err.Error()
			}
			if why, ok := t.failed[db.Name]; ok && err == nil {
				res = "ok (copied with the volume: no snapshot, " + why + ")"
			}
			m.SQLite = append(m.SQLite, DBCheck{Name: db.Name, Volume: db.Volume, Path: db.Path, Result: res})
		}
	}
	return nil
}

// logs keeps the container's output with the backup, when asked to.
func (t *taking) logs(ctx context.Context) error {
	req := t.req
	if !req.Logs {
		return nil
	}
	encrypted := t.m.Encryption != ""
	rc, err := req.Source.LogStream(ctx, req.ContainerID)
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	f, _, err := putCompressed(ctx, req.Store, t.dir+logsKey(encrypted), rc, req.Keys, nil, "", nil)
	rc.Close()
	if err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	f.Key = logsKey(encrypted)
	t.m.Logs = f
	return nil
}

// pauseAndSpool pauses the container, copies every volume into its spool file, and unpauses it,
// on every path. It returns how long the container was paused. Files not reached after an
// error are failed, so that their readers stop.
func pauseAndSpool(ctx context.Context, req Request, vols []spooled, progress func(Progress)) (d time.Duration, err error) {
	next := 0
	defer func() {
		for ; next < len(vols); next++ {
			vols[next].file.fail(fmt.Errorf("not copied: %v", err))
		}
	}()
	if err := req.Source.Pause(ctx, req.ContainerID); err != nil {
		return 0, fmt.Errorf("pause the live container: %w", err)
	}
	start := time.Now()
	unpaused := false
	unpause := func() error {
		if unpaused {
			return nil
		}
		unpaused = true
		// Never leave the live release paused, even when ctx was cancelled.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return req.Source.Unpause(uctx, req.ContainerID)
	}
	defer unpause()
	for i, sv := range vols {
		v := sv.volume
		rc, err := req.Source.CopyFrom(ctx, req.ContainerID, v.Target)
		if err != nil {
			return time.Since(start), fmt.Errorf("volume %s: read %s: %w", v.Name, v.Target, err)
		}
		next = i + 1
		err = sv.file.fill(rc, func(n int64) { progress(Progress{Volume: v.Name, Phase: "read", Bytes: n, Total: sv.total}) })
		rc.Close()
		if err != nil {
			return time.Since(start), fmt.Errorf("volume %s: copy to the spool: %w", v.Name, err)
		}
	}
	d = time.Since(start)
	if err := unpause(); err != nil {
		return d, fmt.Errorf("unpause the live container: %w", err)
	}
	return d, nil
}

// putCompressed compresses r with zstd (and encrypts it, when the keys say so) into the store
// at key, hashing what is stored, and extracts the declared databases from the tar stream as it
// passes. When copyTo is set, the compressed stream (never encrypted) is written to it too. It
// returns the stored file and the uncompressed byte count.
func putCompressed(ctx context.Context, store Store, key string, r io.Reader, keys *Keys, dbs []DB, extractDir string, copyTo io.Writer) (*File, int64, error) {
	pr, pw := io.Pipe()
	h := sha256.New()
	stored := &countingWriter{}
	var raw int64
	var tarErr error
	var wg sync.WaitGroup
	var tee io.Reader = r
	var scanW *io.PipeWriter
	if len(dbs) > 0 {
		scanR, w := io.Pipe()
		scanW = w
		tee = io.TeeReader(r, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tarErr = extractDBs(scanR, dbs, extractDir, MaxVolumeBytes)
			io.Copy(io.Discard, scanR) // keep draining, so the tee never blocks
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := io.MultiWriter(pw, h, stored)
		enc, err := keys.encrypter(out)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		var compressed io.Writer = enc
		if copyTo != nil {
			compressed = io.MultiWriter(enc, copyTo)
		}
		zw, err := zstd.NewWriter(compressed, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		raw, err = io.Copy(zw, tee)
		if cerr := zw.Close(); err == nil {
			err = cerr
		}
		if cerr := enc.Close(); err == nil {
			err = cerr
		}
		if scanW != nil {
			scanW.CloseWithError(err)
		}
		pw.CloseWithError(err)
	}()
	err := store.Put(ctx, key, pr)
	pr.CloseWithError(errors.New("upload ended")) // unblocks the compressor if the upload stopped early
	wg.Wait()
	if err != nil {
		return nil, raw, err
	}
	if tarErr != nil {
		return nil, raw, tarErr
	}
	return &File{Key: key, Size: stored.n, SHA256: hex.EncodeToString(h.Sum(nil))}, raw, nil
}

func dbsIn(all []DB, volume string) []DB {
	var out []DB
	for _, db := range all {
		if db.Volume == volume {
			out = append(out, db)
		}
	}
	return out
}

// scratchName is where the i-th database of a volume is written for its check: a name the
// deployer chooses, never one read from a manifest or an archive.
func scratchName(i int) string { return "db-" + strconv.Itoa(i) }

// scratchNames maps the path in its volume of each database, and of its -wal, to the scratch
// name it is written to.
func scratchNames(dbs []DB) map[string]string {
	want := map[string]string{}
	for i, db := range dbs {
		p := path.Clean(db.Path)
		want[p] = scratchName(i)
		want[p+"-wal"] = scratchName(i) + "-wal"
	}
	return want
}

// extractDBs reads a tar of a volume (entries named <base>/<path>, as the engine's copy API
// writes them) and writes each declared database file, with its -wal, into dir. What it writes
// is bounded by budget and by the free space in dir, whatever the entries' headers claim.
func extractDBs(r io.Reader, dbs []DB, dir string, budget int64) error {
	want := scratchNames(dbs)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		rel, inside := inVolume(hdr.Name)
		out, ok := want[rel]
		if !inside || !ok || hdr.Typeflag != tar.TypeReg {
			continue
		}
		if hdr.Size < 0 || hdr.Size > budget {
			return fmt.Errorf("the archive's %s claims %d bytes, more than the backup holds", Printable(hdr.Name), hdr.Size)
		}
		if err := ensureSpace(dir, hdr.Size, "checking "+path.Base(rel)); err != nil {
			return err
		}
		f, err := os.Create(filepath.Join(dir, out))
		if err != nil {
			return err
		}
		n, err := io.Copy(f, io.LimitReader(tr, hdr.Size))
		f.Close()
		if err != nil {
			return err
		}
		budget -= n
	}
}

func checkExtracted(ctx context.Context, dir string, i int, db DB) (string, error) {
	p := filepath.Join(dir, scratchName(i))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("sqlite %q: %s is not in volume %s: check sqlite.path, or that the app created it", db.Name, db.Path, db.Volume)
	}
	if err := QuickCheck(ctx, p); err != nil {
		return "", fmt.Errorf("sqlite %q (%s in volume %s): %w", db.Name, db.Path, db.Volume, err)
	}
	return "ok", nil
}

// CountingReader counts the bytes read through it (N); Report, when set, is told the count at
// most five times a second.
type CountingReader struct {
	R      io.Reader
	N      int64
	Report func(int64)
	last   time.Time
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	if c.Report != nil && time.Since(c.last) > 200*time.Millisecond {
		c.last = time.Now()
		c.Report(c.N)
	}
	return n, err
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
