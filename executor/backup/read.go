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
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Listing is a service's backups in a store.
type Listing struct {
	Complete   []*Manifest // newest first
	Incomplete []string    // IDs without a manifest: never offered for restore
}

// List reads the manifests of a service's backups.
func List(ctx context.Context, store Store, project, service string) (*Listing, error) {
	dirs, err := listDirs(ctx, store, project, service)
	if err != nil {
		return nil, err
	}
	out := &Listing{}
	for _, id := range sortedIDs(dirs) {
		if !dirs[id].complete {
			out.Incomplete = append(out.Incomplete, id)
			continue
		}
		m, err := readManifest(ctx, store, project, service, id)
		if err != nil {
			return nil, err
		}
		out.Complete = append(out.Complete, m)
	}
	return out, nil
}

// Find returns the complete backup with this ID (or an unambiguous prefix of it).
func Find(ctx context.Context, store Store, project, service, id string) (*Manifest, error) {
	l, err := List(ctx, store, project, service)
	if err != nil {
		return nil, err
	}
	var found []*Manifest
	for _, m := range l.Complete {
		if m.ID == id || strings.HasPrefix(m.ID, id) {
			found = append(found, m)
		}
	}
	for _, inc := range l.Incomplete {
		if inc == id || strings.HasPrefix(inc, id) && len(found) == 0 {
			return nil, fmt.Errorf("backup %s of service.%s is incomplete (it has no manifest: the upload was cut off) and cannot be restored", inc, service)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no backup %q of service.%s in %s: `deployer backups list service.%s` shows them", id, service, store, service)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%q matches %d backups of service.%s: give more of the ID", id, len(found), service)
}

func readManifest(ctx context.Context, store Store, project, service, id string) (*Manifest, error) {
	rc, err := store.Get(ctx, Dir(project, service)+id+"/"+ManifestName)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("backup %s: unreadable manifest: %w", id, err)
	}
	if m.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("backup %s: manifest format %q, this deployer reads %q", id, m.FormatVersion, FormatVersion)
	}
	return &m, nil
}

// fetch downloads a stored file of a backup into a temporary file, refusing it unless its size
// and sha256 match the manifest. The caller removes the file.
func fetch(ctx context.Context, store Store, m *Manifest, f File, tempDir string) (string, error) {
	rc, err := store.Get(ctx, Dir(m.Project, m.Service)+m.ID+"/"+f.Key)
	if err != nil {
		return "", fmt.Errorf("backup %s: %s: %w", m.ID, f.Key, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(tempDir, "deployer-restore-*")
	if err != nil {
		return "", err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("backup %s: download %s: %w", m.ID, f.Key, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != f.SHA256 || n != f.Size {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("backup %s: %s does not match its manifest (sha256 %s, %d bytes; the manifest says %s, %d bytes): it was changed or damaged, and is refused", m.ID, f.Key, short(sum), n, short(f.SHA256), f.Size)
	}
	return tmp.Name(), nil
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// OpenVolume returns the tar stream of one volume of a backup, after checking the archive's
// checksum (nothing is read from an archive that does not match its manifest).
func OpenVolume(ctx context.Context, store Store, m *Manifest, volume, tempDir string) (io.ReadCloser, error) {
	for _, v := range m.Volumes {
		if v.Name != volume {
			continue
		}
		p, err := fetch(ctx, store, m, v.File, tempDir)
		if err != nil {
			return nil, err
		}
		f, err := os.Open(p)
		if err != nil {
			os.Remove(p)
			return nil, err
		}
		dec, err := zstd.NewReader(f)
		if err != nil {
			f.Close()
			os.Remove(p)
			return nil, err
		}
		return &tempReader{Reader: dec.IOReadCloser(), f: f, dec: dec}, nil
	}
	return nil, fmt.Errorf("backup %s has no volume %q", m.ID, volume)
}

type tempReader struct {
	io.Reader
	f   *os.File
	dec *zstd.Decoder
}

func (t *tempReader) Close() error {
	t.dec.Close()
	t.f.Close()
	return os.Remove(t.f.Name())
}

// Verify downloads every file of a backup, checks it against the manifest, reads every archive
// through, and quick_checks the SQLite databases the manifest lists.
func Verify(ctx context.Context, store Store, m *Manifest, tempDir string) error {
	extract, err := os.MkdirTemp(tempDir, "deployer-verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(extract)
	for _, v := range m.Volumes {
		rc, err := OpenVolume(ctx, store, m, v.Name, tempDir)
		if err != nil {
			return err
		}
		var dbs []DB
		for _, c := range m.SQLite {
			if c.Volume == v.Name && c.Result == "ok" { // a recorded failure stays what it was
				dbs = append(dbs, DB{Name: c.Name, Volume: c.Volume, Path: c.Path})
			}
		}
		err = extractDBs(rc, dbs, extract)
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
		}
		rc.Close()
		if err != nil {
			return fmt.Errorf("backup %s: volume %s: %w", m.ID, v.Name, err)
		}
		for _, db := range dbs {
			if _, err := checkExtracted(ctx, extract, db); err != nil {
				return fmt.Errorf("backup %s: %w", m.ID, err)
			}
		}
	}
	if m.Logs != nil {
		p, err := fetch(ctx, store, m, *m.Logs, tempDir)
		if err != nil {
			return err
		}
		os.Remove(p)
	}
	return nil
}

// ReadFiles lists the regular files of a volume's archive with their sizes (for tests and the
// restore summary).
func ReadFiles(r io.Reader) (map[string]int64, error) {
	out := map[string]int64{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			out[hdr.Name] = hdr.Size
		}
	}
}
