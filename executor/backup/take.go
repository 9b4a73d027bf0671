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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
)

// FormatVersion is the version of the manifest format.
const FormatVersion = "1"

// ManifestName is written last in every backup's directory.
const ManifestName = "manifest.json"

// Manifest describes one complete backup.
type Manifest struct {
	FormatVersion   string          `json:"format_version"`
	ID              string          `json:"id"`
	Project         string          `json:"project"`
	Service         string          `json:"service"`
	Release         int             `json:"release"`
	Image           string          `json:"image,omitempty"`
	ImageID         string          `json:"image_id,omitempty"`
	Created         time.Time       `json:"created"`
	DeployerVersion string          `json:"deployer_version"`
	Reason          string          `json:"reason,omitempty"`
	Consistency     string          `json:"consistency"`
	PausedSeconds   float64         `json:"paused_seconds,omitempty"`
	Volumes         []VolumeArchive `json:"volumes"`
	Logs            *File           `json:"logs,omitempty"`
	SQLite          []DBCheck       `json:"sqlite,omitempty"`
}

// VolumeArchive is one volume's archive: a zstd-compressed tar of the volume's files.
type VolumeArchive struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	File
	Bytes int64 `json:"uncompressed_bytes"`
}

// File is a stored object with its checksum.
type File struct {
	Key    string `json:"key"` // relative to the backup's directory
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// DBCheck records the quick_check of a SQLite database found in the backup.
type DBCheck struct {
	Name   string `json:"name"`
	Volume string `json:"volume"`
	Path   string `json:"path"`
	Result string `json:"quick_check"`
}

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
}

// Progress reports bytes moved for one volume.
type Progress struct {
	Volume string
	Phase  string // read (from the paused container), upload, done
	Bytes  int64
	Total  int64 // 0 when unknown
}

// Dir is the directory of a service's backups in a store.
func Dir(project, service string) string { return project + "/" + service + "/" }

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
	dir := Dir(req.Project, req.Service) + m.ID + "/"
	progress := req.Progress
	if progress == nil {
		progress = func(Progress) {}
	}

	// The readers of each volume: spooled files when paused, the live stream otherwise.
	type source struct {
		open  func() (io.ReadCloser, error)
		total int64
	}
	sources := make([]source, len(req.Volumes))
	// waitSpool returns once the copy out of the paused container has ended (and the container
	// runs again), with its error.
	waitSpool := func() error { return nil }
	if req.Consistency == "pause" {
		spool, err := os.MkdirTemp(req.TempDir, "deployer-backup-")
		if err != nil {
			return nil, fmt.Errorf("backup spool: %w", err)
		}
		defer os.RemoveAll(spool)
		files := make([]*spoolFile, len(req.Volumes))
		for i := range req.Volumes {
			files[i] = newSpoolFile(filepath.Join(spool, strconv.Itoa(i)+".tar"))
			sources[i] = source{open: files[i].reader}
		}
		// The copy out of the paused container runs beside compression and upload; an early
		// failure of the upload cancels it, so the pause never outlives the backup.
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			paused, err := pauseAndSpool(sctx, req, files, progress)
			m.PausedSeconds = paused.Seconds()
			done <- err
		}()
		var once sync.Once
		var spoolErr error
		waitSpool = func() error {
			once.Do(func() { spoolErr = <-done })
			return spoolErr
		}
		defer func() { cancel(); waitSpool() }()
	} else {
		for i, v := range req.Volumes {
			v := v
			sources[i] = source{open: func() (io.ReadCloser, error) { return req.Source.CopyFrom(ctx, req.ContainerID, v.Target) }}
		}
	}

	extract, err := os.MkdirTemp(req.TempDir, "deployer-db-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(extract)
	for i, v := range req.Volumes {
		var dbs []DB
		for _, db := range req.SQLite {
			if db.Volume == v.Name {
				dbs = append(dbs, db)
			}
		}
		rc, err := sources[i].open()
		if err != nil {
			return nil, fmt.Errorf("volume %s: read %s: %w", v.Name, v.Target, err)
		}
		key := "volume-" + v.Name + ".tar.zst"
		counted := &countingReader{r: rc, report: func(n int64) { progress(Progress{Volume: v.Name, Phase: "upload", Bytes: n, Total: sources[i].total}) }}
		f, raw, err := putCompressed(ctx, req.Store, dir+key, counted, dbs, extract)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		progress(Progress{Volume: v.Name, Phase: "done", Bytes: raw, Total: raw})
		f.Key = key
		m.Volumes = append(m.Volumes, VolumeArchive{Name: v.Name, Target: v.Target, File: *f, Bytes: raw})
		for _, db := range dbs {
			res, err := checkExtracted(ctx, extract, db)
			if err != nil && !req.Lenient {
				return nil, err
			}
			if err != nil {
				res = "failed: " + err.Error()
			}
			m.SQLite = append(m.SQLite, DBCheck{Name: db.Name, Volume: db.Volume, Path: db.Path, Result: res})
		}
	}
	if err := waitSpool(); err != nil {
		return nil, err
	}
	if req.Logs {
		rc, err := req.Source.LogStream(ctx, req.ContainerID)
		if err != nil {
			return nil, fmt.Errorf("logs: %w", err)
		}
		f, _, err := putCompressed(ctx, req.Store, dir+"logs.txt.zst", rc, nil, "")
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("logs: %w", err)
		}
		f.Key = "logs.txt.zst"
		m.Logs = f
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := req.Store.Put(ctx, dir+ManifestName, strings.NewReader(string(b))); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if req.Keep > 0 {
		if err := Prune(ctx, req.Store, req.Project, req.Service, req.Keep, m.ID); err != nil {
			return m, fmt.Errorf("backup %s is complete, but removing old backups failed: %w", m.ID, err)
		}
	}
	return m, nil
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

// putCompressed compresses r with zstd into the store at key, hashing what is stored, and
// extracts the declared databases from the tar stream as it passes. It returns the stored file
// and the uncompressed byte count.
func putCompressed(ctx context.Context, store Store, key string, r io.Reader, dbs []DB, extractDir string) (*File, int64, error) {
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
			tarErr = extractDBs(scanR, dbs, extractDir)
			io.Copy(io.Discard, scanR) // keep draining, so the tee never blocks
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		enc, err := zstd.NewWriter(io.MultiWriter(pw, h, stored), zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		raw, err = io.Copy(enc, tee)
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

// extractDBs reads a tar of a volume (entries named <base>/<path>, as the engine's copy API
// writes them) and writes each declared database file, with its -wal, into dir.
func extractDBs(r io.Reader, dbs []DB, dir string) error {
	want := map[string]string{}
	for _, db := range dbs {
		p := path.Clean(db.Path)
		want[p] = db.Name
		want[p+"-wal"] = db.Name + "-wal"
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
		f, err := os.Create(filepath.Join(dir, out))
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		f.Close()
		if err != nil {
			return err
		}
	}
}

func checkExtracted(ctx context.Context, dir string, db DB) (string, error) {
	p := filepath.Join(dir, db.Name)
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

// Prune deletes complete backups beyond keep (oldest first) and incomplete ones, except current.
func Prune(ctx context.Context, store Store, project, service string, keep int, current string) error {
	list, err := listDirs(ctx, store, project, service)
	if err != nil {
		return err
	}
	var complete []string
	for _, id := range sortedIDs(list) {
		if list[id].complete {
			complete = append(complete, id)
		}
	}
	drop := map[string]bool{}
	for i, id := range complete { // newest first
		if i >= keep {
			drop[id] = true
		}
	}
	for id, d := range list {
		if !d.complete && id != current {
			drop[id] = true
		}
	}
	for id := range drop {
		if id == current {
			continue
		}
		var keys []string
		for _, o := range list[id].objects {
			keys = append(keys, o.Key)
		}
		// The manifest goes first, so a half-deleted backup is never offered.
		sort.Slice(keys, func(i, j int) bool { return strings.HasSuffix(keys[i], ManifestName) })
		if err := store.Delete(ctx, keys...); err != nil {
			return err
		}
	}
	return nil
}

type backupDir struct {
	complete bool
	objects  []Object
}

func listDirs(ctx context.Context, store Store, project, service string) (map[string]*backupDir, error) {
	prefix := Dir(project, service)
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := map[string]*backupDir{}
	for _, o := range objs {
		rest := strings.TrimPrefix(o.Key, prefix)
		id, name, ok := strings.Cut(rest, "/")
		if !ok {
			continue
		}
		d := out[id]
		if d == nil {
			d = &backupDir{}
			out[id] = d
		}
		d.objects = append(d.objects, o)
		if name == ManifestName {
			d.complete = true
		}
	}
	return out, nil
}

// sortedIDs orders backup IDs newest first (they start with a UTC timestamp).
func sortedIDs(m map[string]*backupDir) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ids)))
	return ids
}
