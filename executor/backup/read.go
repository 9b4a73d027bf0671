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
	// Warnings are what the operator should know about the store itself (directories of a
	// local store that others can change).
	Warnings []string
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

// Find returns the complete, valid backup with this ID, or with an ID this unambiguously
// starts. A whole ID is looked up alone: only that backup's directory is listed and read, so
// nothing else in the store (an ID that extends it, junk that fills a listing's budget, an
// unreadable manifest) keeps it from being found.
func Find(ctx context.Context, store Store, want Expect, keys *Keys, id string) (*Manifest, error) {
	if ValidID(id) {
		return findExact(ctx, store, want, keys, id)
	}
	l, err := List(ctx, store, want, keys)
	if err != nil {
		return nil, err
	}
	var found []*Manifest
	for _, m := range l.Complete {
		if strings.HasPrefix(m.ID, id) {
			found = append(found, m)
		}
	}
	if len(found) == 0 {
		for _, r := range l.Refused {
			if strings.HasPrefix(r.ID, id) {
				return nil, errors.New(r.Reason)
			}
		}
		for _, inc := range l.Incomplete {
			if strings.HasPrefix(inc, id) {
				return nil, incomplete(inc, want)
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, notFound(store, want, id)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%q matches %d backups of service.%s: give more of the ID", id, len(found), want.Service)
}

func incomplete(id string, want Expect) error {
	return fmt.Errorf("backup %s of service.%s is incomplete (it has no manifest: the upload was cut off) and cannot be restored", id, want.Service)
}

func notFound(store Store, want Expect, id string) error {
	return fmt.Errorf("no backup %q of service.%s in %s: `deployer backups list service.%s` shows them", Printable(id), want.Service, store, want.Service)
}

// findExact reads backup id alone: its directory's objects and its manifest.
func findExact(ctx context.Context, store Store, want Expect, keys *Keys, id string) (*Manifest, error) {
	prefix := Dir(want.Project, want.Service) + id + "/"
	objs, err := store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	d := &backupDir{}
	for _, o := range objs {
		if name, ok := strings.CutPrefix(o.Key, prefix); ok && name != "" && !strings.Contains(name, "/") {
			d.add(o, name)
		}
	}
	if len(d.objects) == 0 {
		return nil, notFound(store, want, id)
	}
	m, _, err := examine(ctx, store, want, keys, id, d, time.Now(), maxManifestBytes)
	if errors.Is(err, ErrNotFound) {
		return nil, incomplete(id, want)
	}
	return m, err
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
	v, err := volumeOf(m, volume)
	if err != nil {
		return nil, err
	}
	p, err := fetch(ctx, store, m, v.File, tempDir)
	if err != nil {
		return nil, err
	}
	rc, err := openArchive(p, m, v, keys)
	if err != nil {
		os.Remove(p)
		return nil, err
	}
	return &removing{ReadCloser: rc, path: p}, nil
}

func volumeOf(m *Manifest, volume string) (*VolumeArchive, error) {
	for i, v := range m.Volumes {
		if v.Name != volume {
			continue
		}
		if v.Bytes > MaxVolumeBytes {
			return nil, fmt.Errorf("backup %s: volume %s is declared as %s uncompressed, more than the %s the deployer restores", m.ID, v.Name, HumanBytes(v.Bytes), HumanBytes(MaxVolumeBytes))
		}
		return &m.Volumes[i], nil
	}
	return nil, fmt.Errorf("backup %s has no volume %q", m.ID, volume)
}

// openArchive reads the stored archive at p (checked against its manifest when it was
// downloaded) as the volume's tar stream: decrypted, decompressed, bounded by its declared size.
func openArchive(p string, m *Manifest, v *VolumeArchive, keys *Keys) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	plain, err := keys.decrypter(f, m.Encryption, fmt.Sprintf("backup %s: volume %s", m.ID, v.Name))
	if err != nil {
		f.Close()
		return nil, err
	}
	what := fmt.Sprintf("backup %s: volume %s holds more than the %d bytes its manifest declares", m.ID, v.Name, v.Bytes)
	return decompressed(f, plain, v.Bytes, what)
}

// decompressed is the zstd stream of r, bounded by n bytes; closing it closes f.
func decompressed(f *os.File, r io.Reader, n int64, what string) (io.ReadCloser, error) {
	dec, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(maxWindowBytes), zstd.WithDecoderMaxMemory(maxWindowBytes), zstd.WithDecoderConcurrency(2))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &tempReader{Reader: bounded(dec.IOReadCloser(), n, what), f: f, dec: dec}, nil
}

type tempReader struct {
	io.Reader
	f   *os.File
	dec *zstd.Decoder
}

func (t *tempReader) Close() error {
	t.dec.Close()
	return t.f.Close()
}

// removing removes a scratch file once its reader is closed.
type removing struct {
	io.ReadCloser
	path string
}

func (r *removing) Close() error {
	err := r.ReadCloser.Close()
	os.Remove(r.path)
	return err
}

// OpenCopy reads the local copy of a volume's archive that Take wrote (Request.CopyDir), as
// its tar stream, bounded by the uncompressed bytes the backup counted.
func OpenCopy(dir, volume string, bytes int64) (io.ReadCloser, error) {
	f, err := os.Open(filepath.Join(dir, archiveKey(volume, false)))
	if err != nil {
		return nil, err
	}
	return decompressed(f, f, bytes, fmt.Sprintf("the copy of volume %s holds more than the %d bytes it was", volume, bytes))
}

// VolumeNeeds is what a volume's files take once a backup's archive is restored into it.
type VolumeNeeds struct {
	// Bytes is what the files take on a disk of 4 KiB blocks; the uncompressed size the
	// manifest declares may be larger (512 bytes of tar an entry).
	Bytes int64 `json:"bytes"`
	// Inodes is how many files the archive makes.
	Inodes int64 `json:"inodes"`
}

// Verified is a backup that Download fetched and checked: its archives stay on this machine,
// in a scratch directory of the deployer's, until Close, and a restore reads them from there,
// never from the store again: what the store holds after the verify does not matter.
type Verified struct {
	Manifest *Manifest
	// Needs says, for each volume of the backup, what its files take once restored.
	Needs map[string]VolumeNeeds
	dir   string
	files map[string]string // volume -> the stored archive, checked
	keys  *Keys
}

// Open is the tar stream of one volume of the verified backup.
func (v *Verified) Open(volume string) (io.ReadCloser, error) {
	va, err := volumeOf(v.Manifest, volume)
	if err != nil {
		return nil, err
	}
	p, ok := v.files[volume]
	if !ok {
		return nil, fmt.Errorf("backup %s: volume %s was not downloaded", v.Manifest.ID, volume)
	}
	return openArchive(p, v.Manifest, va, v.keys)
}

// Close removes what was downloaded.
func (v *Verified) Close() error {
	if v == nil || v.dir == "" {
		return nil
	}
	return os.RemoveAll(v.dir)
}

// Verify downloads every file of a backup, checks it against the manifest, reads every archive
// through (decrypting it when it is encrypted), and quick_checks the SQLite databases the
// manifest lists. It writes only to its own scratch directory under tempDir, bounded by the
// free space there, and removes it on every path.
func Verify(ctx context.Context, store Store, m *Manifest, keys *Keys, tempDir string) error {
	v, err := Download(ctx, store, m, keys, tempDir)
	v.Close()
	return err
}

// Download is Verify, keeping the archives it checked (each checked against the free space
// where it is written) for a restore to read: the caller closes what it returns. It also says
// what each volume's files take once restored (Verified.Needs).
func Download(ctx context.Context, store Store, m *Manifest, keys *Keys, tempDir string) (*Verified, error) {
	dir, err := os.MkdirTemp(tempDir, "deployer-verify-")
	if err != nil {
		return nil, err
	}
	v := &Verified{Manifest: m, Needs: map[string]VolumeNeeds{}, dir: dir, files: map[string]string{}, keys: keys}
	extract := filepath.Join(dir, "db")
	if err := os.Mkdir(extract, 0o700); err != nil {
		v.Close()
		return nil, err
	}
	for _, va := range m.Volumes {
		p, err := fetch(ctx, store, m, va.File, dir)
		if err != nil {
			v.Close()
			return nil, err
		}
		v.files[va.Name] = p
		if v.Needs[va.Name], err = v.verifyVolume(ctx, va, extract); err != nil {
			v.Close()
			return nil, err
		}
	}
	os.RemoveAll(extract)
	if m.Logs != nil {
		p, err := fetch(ctx, store, m, *m.Logs, dir)
		if err != nil {
			v.Close()
			return nil, err
		}
		defer os.Remove(p)
		f, err := os.Open(p)
		if err != nil {
			v.Close()
			return nil, err
		}
		defer f.Close()
		plain, err := keys.decrypter(f, m.Encryption, fmt.Sprintf("backup %s: logs", m.ID))
		if err != nil {
			v.Close()
			return nil, err
		}
		if _, err := io.Copy(io.Discard, plain); err != nil {
			v.Close()
			return nil, fmt.Errorf("backup %s: logs: %w", m.ID, err)
		}
	}
	return v, nil
}

func (v *Verified) verifyVolume(ctx context.Context, va VolumeArchive, extract string) (VolumeNeeds, error) {
	m := v.Manifest
	rc, err := v.Open(va.Name)
	if err != nil {
		return VolumeNeeds{}, err
	}
	defer rc.Close()
	var dbs []DB
	for _, c := range m.SQLite {
		if c.Volume == va.Name && c.Result == "ok" { // a recorded failure stays what it was
			dbs = append(dbs, DB{Name: c.Name, Volume: c.Volume, Path: c.Path})
		}
	}
	rep, err := verifyArchive(rc, dbs, extract, va.Bytes)
	if err != nil {
		return VolumeNeeds{}, fmt.Errorf("backup %s: volume %s: %w", m.ID, va.Name, err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return VolumeNeeds{}, fmt.Errorf("backup %s: volume %s: %w", m.ID, va.Name, err)
	}
	for i, db := range dbs {
		if _, err := checkExtracted(ctx, extract, i, db); err != nil {
			return VolumeNeeds{}, fmt.Errorf("backup %s: %w", m.ID, err)
		}
		os.Remove(extract + "/" + scratchName(i))
		os.Remove(extract + "/" + scratchName(i) + "-wal")
	}
	return VolumeNeeds{Bytes: rep.DiskBytes, Inodes: rep.Inodes}, nil
}

// verifyArchive reads a volume's archive as a restore would (through Tame's checks and bounds:
// what a restore would refuse, verify refuses), and writes the declared databases, as the
// restore would leave them, into dir under names it chooses. What it writes is bounded by the
// archive's declared size and by the free space in dir.
func verifyArchive(r io.Reader, dbs []DB, dir string, limit int64) (*TameReport, error) {
	want := scratchNames(dbs)
	// Every entry is written as the restore writes it, to nothing: a header the restore's tar
	// writer would refuse fails here too.
	tw := tar.NewWriter(io.Discard)
	return tameEntries(r, "volume", limit, false, func(h *tar.Header, rel string, data io.Reader, made bool) error {
		if made {
			return nil // a directory Tame makes itself: nothing the store chose
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		out, ok := want[rel]
		if !ok {
			if data != nil {
				if _, err := io.Copy(tw, data); err != nil {
					return fmt.Errorf("read the archive: %w", err)
				}
			}
			return nil
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
		_, err = io.Copy(io.MultiWriter(tw, f), data)
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
