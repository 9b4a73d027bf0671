package backup_test

// Helpers that write archives and backups by hand, byte by byte where the standard tar writer
// would refuse (sparse maps, GNU long names, raw PAX headers, sizes a header only claims), as
// someone with write access to a store would.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/deployer-dev/deployer/executor/backup"
)

func zst(t testing.TB, raw []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	zw, err := zstd.NewWriter(&z, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(raw)
	zw.Close()
	return z.Bytes()
}

// idAt is a backup ID dated t.
func idAt(t time.Time, release int) string {
	return t.UTC().Format("20060102T150405.000Z") + "-r" + strconv.Itoa(release)
}

// plant writes a backup of proj/web by hand: the archive's stored bytes as given, and a
// manifest that declares them with their real size and checksum and `declared` uncompressed
// bytes. edit changes the manifest before it is written.
func plant(t testing.TB, store backup.Store, id string, stored []byte, declared int64, edit func(m map[string]any)) {
	t.Helper()
	sum := sha256.Sum256(stored)
	m := map[string]any{
		"format_version": "2", "id": id, "project": "proj", "service": "web", "release": 1,
		"created": time.Now().UTC(), "deployer_version": "planted", "consistency": "none",
		"volumes": []any{map[string]any{"name": "data", "target": "/data", "key": "volume-data.tar.zst",
			"size": len(stored), "sha256": hex.EncodeToString(sum[:]), "uncompressed_bytes": declared}},
	}
	if edit != nil {
		edit(m)
	}
	ctx := context.Background()
	dir := backup.Dir("proj", "web") + id + "/"
	if err := store.Put(ctx, dir+"volume-data.tar.zst", bytes.NewReader(stored)); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	if err := store.Put(ctx, dir+backup.ManifestName, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

// planted plants a backup of the stored bytes in store and finds it, with a database at
// app.db in its manifest when db is set (so verify extracts and checks it).
func planted(t *testing.T, store backup.Store, stored []byte, declared int64, db bool) (backup.Store, *backup.Manifest) {
	t.Helper()
	id := idAt(time.Now().Add(-time.Minute), 1)
	plant(t, store, id, stored, declared, func(m map[string]any) {
		if db {
			m["sqlite"] = []any{map[string]any{"name": "main", "volume": "data", "path": "app.db", "quick_check": "ok"}}
		}
	})
	m, err := backup.Find(context.Background(), store, want, nil, id)
	if err != nil {
		t.Fatal(err)
	}
	return store, m
}

// manifestAs is a genuine backup's manifest made to name another ID (its signature, if any, no
// longer matches), with edit applied, as someone with write access to the store would write it.
func manifestAs(g *backup.Manifest, id string, edit func(m map[string]any)) []byte {
	b, _ := json.Marshal(g)
	var m map[string]any
	json.Unmarshal(b, &m)
	m["id"] = id
	if edit != nil {
		edit(m)
	}
	b, _ = json.Marshal(m)
	return b
}

// memStore is a store in memory, for the logic that does not depend on a store's kind; like a
// bucket it takes any key.
type memStore struct {
	mu   sync.Mutex
	objs map[string]memObject
}

type memObject struct {
	data []byte
	mod  time.Time
}

func newMemStore() *memStore { return &memStore{objs: map[string]memObject{}} }

func (m *memStore) Put(ctx context.Context, key string, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[key] = memObject{b, time.Now()}
	return nil
}

func (m *memStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, backup.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(o.data)), nil
}

func (m *memStore) List(ctx context.Context, prefix string) ([]backup.Object, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []backup.Object
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, backup.Object{Key: k, Size: int64(len(o.data)), Modified: o.mod})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

func (m *memStore) Delete(ctx context.Context, keys ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		delete(m.objs, k)
	}
	return nil
}

func (m *memStore) Check(ctx context.Context) error { return nil }
func (m *memStore) String() string                  { return "mem://" }

// logical is what a tar stream would make on a disk, counted as Tame counts: 512 bytes an
// entry and each file's size.
type logical struct {
	entries, bytes, fileBytes int64
	names                     []string
	links                     int
	xattrs                    int
}

// restoreThrough runs an opened volume through Tame as a restore does, reading what it hands
// the engine with readTamed.
func restoreThrough(t *testing.T, rc io.ReadCloser, declared int64) (logical, *backup.TameReport, error) {
	pr, pw := io.Pipe()
	counted := make(chan logical)
	go func() { counted <- readTamed(t, pr) }()
	rep, err := backup.Tame(rc, pw, "volume", declared)
	pw.CloseWithError(err)
	rc.Close()
	return <-counted, rep, err
}

// readTamed reads what Tame wrote, checking every entry as the engine would get it: inside the
// volume, of a kind that is safe to make, no setuid or setgid bit, no security attribute.
func readTamed(t *testing.T, r io.Reader) logical {
	defer io.Copy(io.Discard, r)
	var l logical
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err != nil {
			return l
		}
		l.entries++
		l.bytes += 512
		l.names = append(l.names, h.Name)
		if !strings.HasPrefix(h.Name, "volume/") || strings.Contains("/"+h.Name+"/", "/../") {
			t.Errorf("entry %q is outside the volume", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			n, err := io.Copy(io.Discard, tr)
			l.bytes += n
			l.fileBytes += n
			if err == nil && n != h.Size {
				t.Errorf("%s: %d bytes of the %d its header says", h.Name, n, h.Size)
			}
		case tar.TypeLink:
			l.links++
			if !strings.HasPrefix(h.Linkname, "volume/") || strings.Contains("/"+h.Linkname+"/", "/../") {
				t.Errorf("hard link %q to %q outside the volume", h.Name, h.Linkname)
			}
		case tar.TypeDir, tar.TypeSymlink, tar.TypeFifo:
		default:
			t.Errorf("entry %q of type %q reaches the engine", h.Name, h.Typeflag)
		}
		if h.Mode&0o6000 != 0 {
			t.Errorf("entry %q keeps mode %o", h.Name, h.Mode)
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				l.xattrs++
			}
			if strings.HasPrefix(k, "SCHILY.xattr.security.") {
				t.Errorf("entry %q keeps %s", h.Name, k)
			}
		}
	}
}
