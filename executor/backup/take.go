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

// Volume is a volume to back up: its name and where the container mounts it.
type Volume struct {
	Name   string
	Target string
}

// DB is a SQLite database declared in a volume.
type DB struct {
	Name   string
	Volume string
	Path   string // relative to the volume
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
	Consistency    string // pause or none
	Logs           bool
	SQLite         []DB
	Keep           int // complete backups kept per service; 0 keeps all
	// Lenient records a failed quick_check in the manifest instead of failing the backup: for
	// the backup of the current data before a restore, which may be the damage being undone.
	Lenient         bool
	DeployerVersion string
	Reason          string
	TempDir         string // for the spool of a paused copy; os.TempDir() when empty
	Progress        func(Progress)
	// Keys encrypt the archives and logs (age recipients) and sign the manifest; nil: neither.
	Keys *Keys
}

// Progress reports bytes moved for one volume.
type Progress struct {
	Volume string
	Phase  string // read (from the paused container), upload, done
	Bytes  int64
	Total  int64 // 0 when unknown
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
		DeployerVersion: req.DeployerVersion, Reason: req.Reason, Consistency: req.Consistency}
	if req.Keys.encrypts() {
		m.Encryption = "age"
	}
	if req.Progress == nil {
		req.Progress = func(Progress) {}
	}
	t := &taking{req: req, m: m, dir: Dir(req.Project, req.Service) + m.ID + "/", waitSpool: func() error { return nil }}
	defer t.cleanup()
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
		m.Signature = m.sign(key)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := req.Store.Put(ctx, t.dir+ManifestName, strings.NewReader(string(b))); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if req.Keep > 0 {
		if err := Prune(ctx, req.Store, req.Project, req.Service, req.Keep, m.ID); err != nil {
			return m, fmt.Errorf("backup %s is complete, but removing old backups failed: %w", m.ID, err)
		}
	}
	return m, nil
}

// taking is one backup being taken.
type taking struct {
	req Request
	m   *Manifest
	dir string // the backup's directory in the store
	// sources read each volume: spooled files when paused, the live stream otherwise.
	source []func() (io.ReadCloser, error)
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

// sources opens the way each volume is read. With consistency pause, the copy out of the paused
// container runs beside compression and upload, into spool files; an early failure of the
// upload cancels it, so the pause never outlives the backup.
func (t *taking) sources(ctx context.Context) error {
	req := t.req
	t.source = make([]func() (io.ReadCloser, error), len(req.Volumes))
	if req.Consistency != "pause" {
		for i, v := range req.Volumes {
			v := v
			t.source[i] = func() (io.ReadCloser, error) { return req.Source.CopyFrom(ctx, req.ContainerID, v.Target) }
		}
		return nil
	}
	spool, err := os.MkdirTemp(req.TempDir, "deployer-backup-")
	if err != nil {
		return fmt.Errorf("backup spool: %w", err)
	}
	t.cleanups = append(t.cleanups, func() { os.RemoveAll(spool) })
	files := make([]*spoolFile, len(req.Volumes))
	for i := range req.Volumes {
		files[i] = newSpoolFile(filepath.Join(spool, strconv.Itoa(i)+".tar"))
		t.source[i] = files[i].reader
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		paused, err := pauseAndSpool(sctx, req, files, req.Progress)
		t.m.PausedSeconds = paused.Seconds()
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
		rc, err := t.source[i]()
		if err != nil {
			return fmt.Errorf("volume %s: read %s: %w", v.Name, v.Target, err)
		}
		key := archiveKey(v.Name, encrypted)
		counted := &countingReader{r: rc, report: func(n int64) { req.Progress(Progress{Volume: v.Name, Phase: "upload", Bytes: n}) }}
		f, raw, err := putCompressed(ctx, req.Store, t.dir+key, counted, req.Keys, dbs, extract)
		rc.Close()
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		req.Progress(Progress{Volume: v.Name, Phase: "done", Bytes: raw, Total: raw})
		f.Key = key
		m.Volumes = append(m.Volumes, VolumeArchive{Name: v.Name, Target: v.Target, File: *f, Bytes: raw})
		for j, db := range dbs {
			res, err := checkExtracted(ctx, extract, j, db)
			if err != nil && !req.Lenient {
				return err
			}
			if err != nil {
				res = "failed: " + err.Error()
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
	f, _, err := putCompressed(ctx, req.Store, t.dir+logsKey(encrypted), rc, req.Keys, nil, "")
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
func pauseAndSpool(ctx context.Context, req Request, files []*spoolFile, progress func(Progress)) (d time.Duration, err error) {
	next := 0
	defer func() {
		for ; next < len(files); next++ {
			files[next].fail(fmt.Errorf("not copied: %v", err))
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
	for i, v := range req.Volumes {
		rc, err := req.Source.CopyFrom(ctx, req.ContainerID, v.Target)
		if err != nil {
			return time.Since(start), fmt.Errorf("volume %s: read %s: %w", v.Name, v.Target, err)
		}
		next = i + 1
		err = files[i].fill(rc, func(n int64) { progress(Progress{Volume: v.Name, Phase: "read", Bytes: n}) })
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
// passes. It returns the stored file and the uncompressed byte count.
func putCompressed(ctx context.Context, store Store, key string, r io.Reader, keys *Keys, dbs []DB, extractDir string) (*File, int64, error) {
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
		zw, err := zstd.NewWriter(enc, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
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

// extractDBs reads a tar of a volume (entries named <base>/<path>, as the engine's copy API
// writes them) and writes each declared database file, with its -wal, into dir. What it writes
// is bounded by budget and by the free space in dir, whatever the entries' headers claim.
func extractDBs(r io.Reader, dbs []DB, dir string, budget int64) error {
	want := map[string]string{}
	for i, db := range dbs {
		p := path.Clean(db.Path)
		want[p] = scratchName(i)
		want[p+"-wal"] = scratchName(i) + "-wal"
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		name := hdr.Name
		if i := strings.IndexByte(name, '/'); i >= 0 {
			name = name[i+1:]
		}
		out, ok := want[path.Clean(name)]
		if !ok || hdr.Typeflag != tar.TypeReg {
			continue
		}
		if hdr.Size < 0 || hdr.Size > budget {
			return fmt.Errorf("the archive's %s claims %d bytes, more than the backup holds", Printable(hdr.Name), hdr.Size)
		}
		if err := ensureSpace(dir, hdr.Size, "checking "+path.Base(name)); err != nil {
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

type countingReader struct {
	r      io.Reader
	n      int64
	last   time.Time
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.report != nil && time.Since(c.last) > 200*time.Millisecond {
		c.last = time.Now()
		c.report(c.n)
	}
	return n, err
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
