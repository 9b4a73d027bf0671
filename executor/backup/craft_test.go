package backup_test

// Helpers that write archives and backups by hand, byte by byte where the standard tar writer
// would refuse (sparse maps, GNU long names, raw PAX headers, sizes a header only claims), as
// someone with write access to a store would.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
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

// rawTar builds a tar stream block by block.
type rawTar struct{ bytes.Buffer }

// header writes one 512-byte header. gnu selects the GNU magic (needed by 'L', 'K', 'S').
func (r *rawTar) header(name string, typ byte, size int64, link string, gnu bool, extra func(b []byte)) {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	if size >= 0 && size < 1<<33 {
		copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	} else { // base-256, as GNU tar writes large sizes
		b[124] = 0x80
		binary.BigEndian.PutUint64(b[128:136], uint64(size))
	}
	copy(b[136:148], "14712345670\x00")
	b[156] = typ
	copy(b[157:257], link)
	if gnu {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:263], "ustar\x00")
		copy(b[263:265], "00")
	}
	if extra != nil {
		extra(b)
	}
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	r.Write(b)
}

// data writes an entry's data, padded to a block.
func (r *rawTar) data(p []byte) {
	r.Write(p)
	if n := len(p) % 512; n != 0 {
		r.Write(make([]byte, 512-n))
	}
}

func (r *rawTar) file(name, body string) {
	r.header(name, '0', int64(len(body)), "", false, nil)
	r.data([]byte(body))
}

func (r *rawTar) dir(name string) { r.header(name, '5', 0, "", false, nil) }

// pax writes a PAX extended header ('x') with these records, in order.
func (r *rawTar) pax(kv ...string) {
	var body bytes.Buffer
	for i := 0; i+1 < len(kv); i += 2 {
		body.WriteString(paxRecord(kv[i], kv[i+1]))
	}
	r.header("PaxHeaders/x", 'x', int64(body.Len()), "", false, nil)
	r.data(body.Bytes())
}

func paxRecord(k, v string) string {
	n := len(k) + len(v) + 3
	total := n + len(strconv.Itoa(n))
	if len(strconv.Itoa(total)) > len(strconv.Itoa(n)) {
		total++
	}
	return fmt.Sprintf("%d %s=%s\n", total, k, v)
}

func (r *rawTar) end() []byte {
	r.Write(make([]byte, 1024))
	return r.Bytes()
}

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

// planted plants a backup of the stored bytes in a new local store and finds it, with a
// database at app.db in its manifest when db is set (so verify extracts and checks it).
func planted(t *testing.T, stored []byte, declared int64, db bool) (*backup.Local, *backup.Manifest) {
	t.Helper()
	store := &backup.Local{Dir: t.TempDir()}
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
			if strings.HasPrefix(k, "SCHILY.xattr.security.") {
				t.Errorf("entry %q keeps %s", h.Name, k)
			}
		}
	}
}
