package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Listing is a service's backups in a store.
type Listing struct {
	Complete   []*Manifest // newest first
	Incomplete []string    // IDs without a manifest: never offered for restore
	// Refused are backups whose manifest does not hold up (it names another project, a volume
	// that is not a volume, a bad signature ...): listed, never restored.
	Refused []Refused
}

// Refused is a backup that is not offered, and why.
type Refused struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// List reads and checks the manifests of a service's backups, newest first. What it offers
// as complete is what retention counts: a manifest that reads, names this project and service,
// passes the signature check, is not dated in the future, and whose objects are in the store
// at the sizes it declares. Everything else in the service's directory is listed as refused,
// with the reason.
func List(ctx context.Context, store Store, want Expect, keys *Keys) (*Listing, error) {
	sc, err := scan(ctx, store, want, keys, time.Now())
	if err != nil {
		return nil, err
	}
	return sc.listing, nil
}

// storeError marks a failure to read from the store, as opposed to something wrong in what was read.
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// Find returns the complete, valid backup with this ID (or an unambiguous prefix of it).
func Find(ctx context.Context, store Store, want Expect, keys *Keys, id string) (*Manifest, error) {
	l, err := List(ctx, store, want, keys)
	if err != nil {
		return nil, err
	}
	var found []*Manifest
	for _, m := range l.Complete {
		if m.ID == id || strings.HasPrefix(m.ID, id) {
			found = append(found, m)
		}
	}
	if len(found) == 0 {
		for _, r := range l.Refused {
			if r.ID == id || strings.HasPrefix(r.ID, id) {
				return nil, errors.New(r.Reason)
			}
		}
		for _, inc := range l.Incomplete {
			if inc == id || strings.HasPrefix(inc, id) {
				return nil, fmt.Errorf("backup %s of service.%s is incomplete (it has no manifest: the upload was cut off) and cannot be restored", inc, want.Service)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no backup %q of service.%s in %s: `deployer backups list service.%s` shows them", id, want.Service, store, want.Service)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%q matches %d backups of service.%s: give more of the ID", id, len(found), want.Service)
}

// fetch downloads a stored file of a backup into a temporary file, refusing it unless its size
// and sha256 match the manifest. It reads no more than the manifest declares (and never more
// than MaxObjectBytes), and checks the free space first. The caller removes the file.
func fetch(ctx context.Context, store Store, m *Manifest, f File, tempDir string) (string, error) {
	if f.Size > MaxObjectBytes {
		return "", fmt.Errorf("backup %s: %s is declared as %s, more than the %s the deployer reads", m.ID, f.Key, HumanBytes(f.Size), HumanBytes(MaxObjectBytes))
	}
	if err := ensureSpace(tempDir, f.Size, "downloading "+f.Key); err != nil {
		return "", fmt.Errorf("backup %s: %w", m.ID, err)
	}
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
	n, err := io.Copy(io.MultiWriter(tmp, h), bounded(rc, f.Size, f.Key))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrTooLarge) {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("backup %s: %s is larger than the %d bytes its manifest says: it was changed, and is refused", m.ID, f.Key, f.Size)
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
// checksum (nothing is read from an archive that does not match its manifest). The stream is
// decrypted when the backup is, and ends with an error where it would exceed the uncompressed
// size the manifest declares.
func OpenVolume(ctx context.Context, store Store, m *Manifest, volume string, keys *Keys, tempDir string) (io.ReadCloser, error) {
	for _, v := range m.Volumes {
		if v.Name != volume {
			continue
		}
		if v.Bytes > MaxVolumeBytes {
			return nil, fmt.Errorf("backup %s: volume %s is declared as %s uncompressed, more than the %s the deployer restores", m.ID, v.Name, HumanBytes(v.Bytes), HumanBytes(MaxVolumeBytes))
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
		closeAll := func() { f.Close(); os.Remove(p) }
		plain, err := keys.decrypter(f, m.Encryption, fmt.Sprintf("backup %s: volume %s", m.ID, v.Name))
		if err != nil {
			closeAll()
			return nil, err
		}
		dec, err := zstd.NewReader(plain, zstd.WithDecoderMaxWindow(maxWindowBytes), zstd.WithDecoderMaxMemory(maxWindowBytes), zstd.WithDecoderConcurrency(2))
		if err != nil {
			closeAll()
			return nil, err
		}
		what := fmt.Sprintf("backup %s: volume %s holds more than the %d bytes its manifest declares", m.ID, v.Name, v.Bytes)
		return &tempReader{Reader: bounded(dec.IOReadCloser(), v.Bytes, what), f: f, dec: dec}, nil
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
// through (decrypting it when it is encrypted), and quick_checks the SQLite databases the
// manifest lists. It writes only to its own scratch directory under tempDir, bounded by the
// free space there, and removes it on every path.
func Verify(ctx context.Context, store Store, m *Manifest, keys *Keys, tempDir string) error {
	_, err := VerifyDisk(ctx, store, m, keys, tempDir)
	return err
}

// VerifyDisk is Verify, and says what each volume's files take on a disk once restored
// (TameReport.DiskBytes): the space a restore checks before it empties a volume, with the
// declared size.
func VerifyDisk(ctx context.Context, store Store, m *Manifest, keys *Keys, tempDir string) (map[string]int64, error) {
	extract, err := os.MkdirTemp(tempDir, "deployer-verify-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(extract)
	disk := map[string]int64{}
	for _, v := range m.Volumes {
		if disk[v.Name], err = verifyVolume(ctx, store, m, v, keys, tempDir, extract); err != nil {
			return nil, err
		}
	}
	if m.Logs != nil {
		p, err := fetch(ctx, store, m, *m.Logs, tempDir)
		if err != nil {
			return nil, err
		}
		defer os.Remove(p)
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		plain, err := keys.decrypter(f, m.Encryption, fmt.Sprintf("backup %s: logs", m.ID))
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, plain); err != nil {
			return nil, fmt.Errorf("backup %s: logs: %w", m.ID, err)
		}
	}
	return disk, nil
}

func verifyVolume(ctx context.Context, store Store, m *Manifest, v VolumeArchive, keys *Keys, tempDir, extract string) (int64, error) {
	rc, err := OpenVolume(ctx, store, m, v.Name, keys, tempDir)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	var dbs []DB
	for _, c := range m.SQLite {
		if c.Volume == v.Name && c.Result == "ok" { // a recorded failure stays what it was
			dbs = append(dbs, DB{Name: c.Name, Volume: c.Volume, Path: c.Path})
		}
	}
	rep, err := verifyArchive(rc, dbs, extract, v.Bytes)
	if err != nil {
		return 0, fmt.Errorf("backup %s: volume %s: %w", m.ID, v.Name, err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return 0, fmt.Errorf("backup %s: volume %s: %w", m.ID, v.Name, err)
	}
	for i, db := range dbs {
		if _, err := checkExtracted(ctx, extract, i, db); err != nil {
			return 0, fmt.Errorf("backup %s: %w", m.ID, err)
		}
		os.Remove(extract + "/" + scratchName(i))
		os.Remove(extract + "/" + scratchName(i) + "-wal")
	}
	return rep.DiskBytes, nil
}

// verifyArchive reads a volume's archive as a restore would (through Tame's checks and bounds:
// what a restore would refuse, verify refuses), and writes the declared databases, as the
// restore would leave them, into dir under names it chooses. What it writes is bounded by the
// archive's declared size and by the free space in dir.
func verifyArchive(r io.Reader, dbs []DB, dir string, limit int64) (*TameReport, error) {
	want := scratchNames(dbs)
	return tameEntries(r, "volume", limit, func(h *tar.Header, rel string, data io.Reader) error {
		out, ok := want[rel]
		if !ok {
			return nil // the rest of the entry is skipped by the next read
		}
		dst := filepath.Join(dir, out)
		os.Remove(dst) // what the restore leaves at that path is the last entry's
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		if err := ensureSpace(dir, h.Size, "checking "+path.Base(rel)); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		return nil
	})
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
