package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
)

// memSource is a container whose volumes are tar streams in memory.
type memSource struct{ volumes map[string][]byte }

func (m *memSource) CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m.volumes[path])), nil
}
func (m *memSource) Pause(ctx context.Context, id string) error   { return nil }
func (m *memSource) Unpause(ctx context.Context, id string) error { return nil }
func (m *memSource) LogStream(ctx context.Context, id string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("log line with the app's secret data\n")), nil
}

type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

var want = backup.Expect{Project: "proj", Service: "web", DBs: []backup.DB{{Name: "main", Volume: "data", Path: "app.db"}}}

// take makes a backup of one volume "data" (its tar given) in a local store.
func take(t *testing.T, store backup.Store, keys *backup.Keys, volume []byte) *backup.Manifest {
	t.Helper()
	m, err := backup.Take(context.Background(), backup.Request{Store: store, Source: &memSource{map[string][]byte{"/data": volume}},
		Project: "proj", Service: "web", Release: 3, ContainerID: "c", Consistency: "none", Logs: true, Keys: keys,
		Volumes: []backup.Volume{{Name: "data", Target: "/data"}}, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func rewriteManifest(t *testing.T, dir string, m *backup.Manifest, edit func(raw map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, backup.Dir("proj", "web"), m.ID, backup.ManifestName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	json.Unmarshal(b, &raw)
	edit(raw)
	b, _ = json.Marshal(raw)
	os.WriteFile(p, b, 0o600)
}

func volumes(raw map[string]any) map[string]any { return raw["volumes"].([]any)[0].(map[string]any) }

// A manifest's fields are data: a name that climbs, another project's, another volume, an
// object key of its own choosing are refused before anything is read or written.
func TestCraftedManifestsAreRefused(t *testing.T) {
	cases := []struct {
		name string
		edit func(raw map[string]any)
		want string
	}{
		{"sqlite name climbs", func(raw map[string]any) {
			raw["sqlite"] = []any{map[string]any{"name": "../../../../tmp/pwned", "volume": "data", "path": "app.db", "quick_check": "ok"}}
		}, "is not a database the configuration declares"},
		{"sqlite path climbs", func(raw map[string]any) {
			raw["sqlite"] = []any{map[string]any{"name": "main", "volume": "data", "path": "../etc/passwd", "quick_check": "ok"}}
		}, "is not a path inside a volume"},
		{"another project", func(raw map[string]any) { raw["project"] = "other" }, `not of project "proj"`},
		{"another service", func(raw map[string]any) { raw["service"] = "db" }, `not of project "proj" service "web"`},
		{"volume name is a path", func(raw map[string]any) { volumes(raw)["name"] = "../../var/lib/docker" }, "is not a Docker volume name"},
		{"key of its own", func(raw map[string]any) { volumes(raw)["key"] = "../../other/web/x/volume-data.tar.zst" }, "the deployer names it"},
		{"negative size", func(raw map[string]any) { volumes(raw)["size"] = -1 }, "is not valid"},
		{"id of another directory", func(raw map[string]any) { raw["id"] = "20200101T000000.000Z-r1" }, "but it is in the directory"},
		{"escape sequence", func(raw map[string]any) { raw["project"] = "\x1b]0;owned\x07" }, `\x1b]0;owned\a`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			store := &backup.Local{Dir: dir}
			m := take(t, store, nil, tarOf(t, entry{name: "data/", typ: tar.TypeDir}, entry{name: "data/f.txt", body: "x"}))
			rewriteManifest(t, dir, m, c.edit)
			l, err := backup.List(context.Background(), store, want, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Complete) != 0 || len(l.Refused) != 1 || !strings.Contains(l.Refused[0].Reason, c.want) {
				t.Fatalf("listing: %+v", l)
			}
			if strings.ContainsAny(l.Refused[0].Reason, "\x1b\x07") {
				t.Errorf("control characters reach the output: %q", l.Refused[0].Reason)
			}
			if _, err := backup.Find(context.Background(), store, want, nil, m.ID); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("find: %v", err)
			}
			if _, err := os.Stat("/tmp/pwned"); err == nil {
				t.Error("a file was written outside the scratch directory")
			}
		})
	}
}

// Sizes are claims: an object longer than declared, and an archive that expands past its
// declared size, are refused after reading no more than was declared.
func TestLyingSizesAndBombs(t *testing.T) {
	ctx := context.Background()
	t.Run("object larger than declared", func(t *testing.T) {
		dir := t.TempDir()
		store := &backup.Local{Dir: dir}
		m := take(t, store, nil, tarOf(t, entry{name: "data/f.txt", body: strings.Repeat("x", 5000)}))
		archive := filepath.Join(dir, backup.Dir("proj", "web"), m.ID, m.Volumes[0].Key)
		f, _ := os.OpenFile(archive, os.O_APPEND|os.O_WRONLY, 0)
		f.Write(make([]byte, 1<<20))
		f.Close()
		err := backup.Verify(ctx, store, m, nil, t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "is larger than the") {
			t.Errorf("verify: %v", err)
		}
	})
	t.Run("decompression bomb", func(t *testing.T) {
		// 64 MiB of zeros in a database entry compresses to a few KiB; the manifest declares
		// the archive's real compressed size and checksum but only 10 KiB uncompressed.
		dir := t.TempDir()
		store := &backup.Local{Dir: dir}
		m := take(t, store, nil, tarOf(t, entry{name: "data/app.db", body: string(make([]byte, 64<<20))}))
		if m.Volumes[0].Size > 1<<20 {
			t.Fatalf("the bomb is not small: %d bytes", m.Volumes[0].Size)
		}
		rewriteManifest(t, dir, m, func(raw map[string]any) {
			volumes(raw)["uncompressed_bytes"] = 10 << 10
			raw["sqlite"] = []any{map[string]any{"name": "main", "volume": "data", "path": "app.db", "quick_check": "ok"}}
		})
		found, err := backup.Find(ctx, store, want, nil, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		scratch := t.TempDir()
		err = backup.Verify(ctx, store, found, nil, scratch)
		if err == nil || !strings.Contains(err.Error(), "expands past the 10240 bytes it declares") || !errors.Is(err, backup.ErrTooLarge) {
			t.Errorf("verify: %v", err)
		}
		if used := dirSize(t, scratch); used > 1<<20 {
			t.Errorf("verify wrote %d bytes for a backup that declares 10 KiB", used)
		}
		rc, err := backup.OpenVolume(ctx, store, found, "data", nil, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if !errors.Is(err, backup.ErrTooLarge) || n > 10<<10 {
			t.Errorf("read %d bytes, %v", n, err)
		}
	})
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// Tame keeps what is safe to recreate in a volume and lists what it left out or changed.
func TestTame(t *testing.T) {
	in := tarOf(t,
		entry{name: "data/", typ: tar.TypeDir, mode: 0o755},
		entry{name: "data/a.txt", body: "hello"},
		entry{name: "data/b.txt", typ: tar.TypeLink, link: "data/a.txt"},
		entry{name: "data/dangling", typ: tar.TypeLink, link: "data/missing"},
		entry{name: "data/outside", typ: tar.TypeLink, link: "../../etc/shadow"},
		entry{name: "data/null", typ: tar.TypeChar},
		entry{name: "data/sda", typ: tar.TypeBlock},
		entry{name: "data/suid", body: "#!", mode: 0o4755},
		entry{name: "data/sgid-dir/", typ: tar.TypeDir, mode: 0o2775},
		entry{name: "data/../../etc/cron.d/x", body: "* * * * * root sh"},
		entry{name: "/etc/passwd", body: "root::0:0"},
		entry{name: "data/link", typ: tar.TypeSymlink, link: "/etc"},
		entry{name: "data/link/passwd", body: "through the link"},
		entry{name: "data/fifo", typ: tar.TypeFifo},
	)
	var out bytes.Buffer
	rep, err := backup.Tame(bytes.NewReader(in), &out, "volume", int64(len(in)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*tar.Header{}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[h.Name] = h
	}
	for _, name := range []string{"volume/", "volume/a.txt", "volume/b.txt", "volume/suid", "volume/sgid-dir/", "volume/link", "volume/fifo"} {
		if got[name] == nil {
			t.Errorf("%s is missing", name)
		}
	}
	if h := got["volume/b.txt"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "volume/a.txt" {
		t.Errorf("hard link: %+v", h)
	}
	if h := got["volume/suid"]; h != nil && h.Mode&0o6000 != 0 {
		t.Errorf("setuid kept: %o", h.Mode)
	}
	if h := got["volume/sgid-dir/"]; h != nil && h.Mode&0o6000 != 0 {
		t.Errorf("setgid kept: %o", h.Mode)
	}
	for name := range got {
		if !strings.HasPrefix(name, "volume/") || strings.Contains(name, "..") || strings.Contains(name, "null") || strings.Contains(name, "sda") || strings.Contains(name, "link/") || name == "volume/dangling" || name == "volume/outside" {
			t.Errorf("%s should have been left out", name)
		}
	}
	text := strings.Join(rep.Lines(), "\n")
	for _, w := range []string{"skipped 2 (a device node)", "skipped 2 (outside the volume)", "skipped 1 (inside a symbolic link)",
		"skipped 2 (a hard link to a file the archive does not hold before it)", "changed 2 (setuid/setgid bit cleared)"} {
		if !strings.Contains(text, w) {
			t.Errorf("report lacks %q:\n%s", w, text)
		}
	}
}

// Pruning touches only directories named like backups directly under the service's directory:
// a store nested inside another keeps its backups, and an incomplete backup is deleted only
// once it is a day old.
func TestPruneNestedStores(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	outer := &backup.Local{Dir: dir}
	// Another project's store lives inside the outer store, exactly where the outer store keeps
	// proj/web's backups.
	inner := &backup.Local{Dir: filepath.Join(dir, "proj", "web")}
	innerM, err := backup.Take(ctx, backup.Request{Store: inner, Source: &memSource{map[string][]byte{"/d": tarOf(t, entry{name: "d/x", body: "x"})}},
		Project: "other", Service: "svc", ContainerID: "c", Consistency: "none", Volumes: []backup.Volume{{Name: "vol", Target: "/d"}}})
	if err != nil {
		t.Fatal(err)
	}
	var ms []*backup.Manifest
	for i := 0; i < 3; i++ {
		ms = append(ms, take(t, outer, nil, tarOf(t, entry{name: "data/x", body: "x"})))
		time.Sleep(5 * time.Millisecond)
	}
	// An incomplete backup of today, and one of three days ago.
	fresh, old := "20991231T000000.000Z-r9", "20000101T000000.000Z-r1"
	for _, id := range []string{fresh, old} {
		outer.Put(ctx, backup.Dir("proj", "web")+id+"/volume-data.tar.zst", strings.NewReader("partial"))
	}
	past := time.Now().Add(-72 * time.Hour)
	os.Chtimes(filepath.Join(dir, "proj", "web", old, "volume-data.tar.zst"), past, past)

	if _, err := backup.Prune(ctx, outer, want, nil, 1, ""); err != nil {
		t.Fatal(err)
	}
	l, _ := backup.List(ctx, outer, want, nil)
	if len(l.Complete) != 1 || l.Complete[0].ID != ms[2].ID {
		t.Errorf("kept %+v, want only %s", l.Complete, ms[2].ID)
	}
	if strings.Join(l.Incomplete, ",") != fresh {
		t.Errorf("incomplete: %v, want only the fresh one", l.Incomplete)
	}
	il, err := backup.List(ctx, inner, backup.Expect{Project: "other", Service: "svc"}, nil)
	if err != nil || len(il.Complete) != 1 || il.Complete[0].ID != innerM.ID {
		t.Errorf("the nested store lost its backup: %+v %v", il, err)
	}
}

// With age recipients the store holds no plaintext; verify needs the identity, refuses a wrong
// one, and a signed manifest changed by someone without the key is refused.
func TestEncryptionAndSigning(t *testing.T) {
	ctx := context.Background()
	id, _ := age.GenerateX25519Identity()
	wrong, _ := age.GenerateX25519Identity()
	keys := &backup.Keys{Recipients: []age.Recipient{id.Recipient()}, SigningKey: []byte("0123456789abcdef-signing")}
	dir := t.TempDir()
	store := &backup.Local{Dir: dir}
	secret := "the production database row: card 4111-1111"
	m := take(t, store, keys, tarOf(t, entry{name: "data/rows.txt", body: strings.Repeat(secret, 100)}))
	if m.Encryption != "age" || !strings.HasPrefix(m.Signature, "hmac-sha256:") {
		t.Fatalf("manifest: %+v", m)
	}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte("card 4111")) || bytes.Contains(b, []byte("secret data")) {
				t.Errorf("%s holds plaintext", p)
			}
			if dec, err := zstd.NewReader(bytes.NewReader(b)); err == nil {
				if plain, err := io.ReadAll(dec); err == nil && bytes.Contains(plain, []byte("card 4111")) {
					t.Errorf("%s is only compressed", p)
				}
			}
		}
		return nil
	})
	readKeys := &backup.Keys{SigningKey: keys.SigningKey}
	found, err := backup.Find(ctx, store, want, readKeys, m.ID)
	if err != nil || found.Signed != backup.SignedOK {
		t.Fatalf("find: %+v %v", found, err)
	}
	if err := backup.Verify(ctx, store, found, readKeys, t.TempDir()); err == nil || !strings.Contains(err.Error(), "give the identity") {
		t.Errorf("no identity: %v", err)
	}
	readKeys.Identities = []age.Identity{wrong}
	if err := backup.Verify(ctx, store, found, readKeys, t.TempDir()); err == nil || !strings.Contains(err.Error(), "decrypt") {
		t.Errorf("wrong identity: %v", err)
	}
	readKeys.Identities = []age.Identity{id}
	if err := backup.Verify(ctx, store, found, readKeys, t.TempDir()); err != nil {
		t.Errorf("right identity: %v", err)
	}
	rc, err := backup.OpenVolume(ctx, store, found, "data", readKeys, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files, _ := backup.ReadFiles(rc)
	rc.Close()
	if files["data/rows.txt"] != int64(len(secret)*100) {
		t.Errorf("decrypted archive: %v", files)
	}

	// Tampering: the reason changed, keeping the old signature.
	rewriteManifest(t, dir, m, func(raw map[string]any) { raw["reason"] = "innocent" })
	if _, err := backup.Find(ctx, store, want, readKeys, m.ID); err == nil || !strings.Contains(err.Error(), "signature does not match") {
		t.Errorf("tampered: %v", err)
	}
	// Unsigned: listed as such (a backup from before the key was set).
	rewriteManifest(t, dir, m, func(raw map[string]any) { raw["reason"] = m.Reason; delete(raw, "signature") })
	if found, err := backup.Find(ctx, store, want, readKeys, m.ID); err != nil || found.Signed != backup.Unsigned {
		t.Errorf("unsigned: %+v %v", found, err)
	}
	// Without a key, nothing is checked.
	if found, err := backup.Find(ctx, store, want, nil, m.ID); err != nil || found.Signed != backup.NotChecked {
		t.Errorf("no key: %+v %v", found, err)
	}
}

// A local store refuses ".." as a path component only: a project named a..b backs up fine.
func TestLocalStoreKeys(t *testing.T) {
	ctx := context.Background()
	store := &backup.Local{Dir: t.TempDir()}
	if err := store.Put(ctx, "a..b/web/x", strings.NewReader("ok")); err != nil {
		t.Errorf("a..b: %v", err)
	}
	for _, k := range []string{"../x", "a/../../x", "/etc/x", "a//b", "a/./b"} {
		if err := store.Put(ctx, k, strings.NewReader("no")); err == nil {
			t.Errorf("%q was accepted", k)
		}
	}
	// A symbolic link put into the store does not lead reads or writes outside it.
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host file"), 0o600)
	os.Symlink(outside, filepath.Join(store.Dir, "linked"))
	if rc, err := store.Get(ctx, "linked/secret"); err == nil {
		rc.Close()
		t.Error("read through a symbolic link out of the store")
	}
	if err := store.Put(ctx, "linked/new", strings.NewReader("x")); err == nil {
		t.Error("wrote through a symbolic link out of the store")
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("a file appeared outside the store")
	}
}

// A database is empty (and seed_if_empty runs) when it has no tables, or tables without rows,
// as an app that creates its schema at startup leaves it.
func TestEmptyDatabase(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		sql   []string
		empty bool
	}{
		{"new file", nil, true},
		{"schema only", []string{"CREATE TABLE manuals (id INTEGER PRIMARY KEY, body TEXT)", "CREATE TABLE users (id INTEGER)"}, true},
		{"a row in one table", []string{"CREATE TABLE manuals (id INTEGER PRIMARY KEY, body TEXT)", `CREATE TABLE "odd ""name" (id INTEGER)`, `INSERT INTO "odd ""name" VALUES (1)`}, false},
	} {
		p := filepath.Join(t.TempDir(), "app.db")
		db, err := sql.Open("sqlite", p)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range c.sql {
			if _, err := db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		if got, err := backup.Empty(ctx, p); err != nil || got != c.empty {
			t.Errorf("%s: empty = %v, %v; want %v", c.name, got, err, c.empty)
		}
	}
}

// A signature binds the store: staging's signed backups copied into production's bucket (the
// same signing key in both) are listed there as signed for another store, neither counted nor
// deleted by retention, and a prune with keep = 2 keeps both of production's own. A manifest
// made before the binding (no store in it) still verifies.
func TestSignedForAnotherStore(t *testing.T) {
	ctx := context.Background()
	keys := &backup.Keys{SigningKey: []byte("0123456789abcdef-signing")}
	cfg := s3test.Config(t)
	open := func(prefix string) *backup.S3 {
		c := cfg
		c.Prefix = prefix
		st, err := backup.NewS3(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	prod, staging := open("prod"), open("staging/")
	var own, theirs []*backup.Manifest
	for i := 0; i < 2; i++ {
		m, _ := takeKeep(t, prod, keys, 0)
		own = append(own, m)
		m, _ = takeKeep(t, staging, keys, 0)
		theirs = append(theirs, m)
	}
	// Copied byte for byte, by someone who can write to both.
	list, err := staging.List(ctx, "proj/")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list {
		rc, err := staging.Get(ctx, o.Key)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if err := prod.Put(ctx, o.Key, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	m, err := backup.Find(ctx, prod, want, keys, theirs[1].ID)
	if err != nil || m.Signed != backup.OtherStore || m.Store != "s3://"+cfg.Bucket+"/staging/" {
		t.Fatalf("staging's backup in production's store: %+v %v", m, err)
	}
	if m, err := backup.Find(ctx, staging, want, keys, theirs[1].ID); err != nil || m.Signed != backup.SignedOK {
		t.Errorf("in its own store: %+v %v", m, err)
	}
	rep, err := backup.Prune(ctx, prod, want, keys, 2, "")
	if err != nil || len(rep.Deleted) != 0 {
		t.Errorf("prune with keep = 2: %+v %v", rep, err)
	}
	if !strings.Contains(rep.Summary(), "retention ignored 2 entries") {
		t.Errorf("summary: %s", rep.Summary())
	}
	for _, g := range own {
		if _, err := backup.Find(ctx, prod, want, keys, g.ID); err != nil {
			t.Errorf("production's %s: %v", g.ID, err)
		}
	}
	// A manifest signed before the store was bound (no "store" field) verifies as it did.
	old := own[0]
	old.Store = ""
	old.Signature = ""
	b, _ := json.Marshal(old)
	var raw map[string]any
	json.Unmarshal(b, &raw)
	delete(raw, "store")
	raw["signature"] = backup.SignLegacy(raw, keys.SigningKey)
	b, _ = json.Marshal(raw)
	if err := prod.Put(ctx, backup.Dir("proj", "web")+old.ID+"/"+backup.ManifestName, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if m, err := backup.Find(ctx, prod, want, keys, old.ID); err != nil || m.Signed != backup.SignedOK {
		t.Errorf("a manifest signed before the binding: %+v %v", m, err)
	}
}
