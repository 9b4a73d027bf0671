package backup_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
)

// A listing reads a bounded number of keys and manifest bytes, whatever the store holds: a
// service's directory flooded with keys is refused by name (and a backup still completes,
// saying that retention did not run), keys elsewhere in the store are never read, and a server
// that never stops paging is stopped.
func TestListingIsBounded(t *testing.T) {
	ctx := context.Background()
	defer backup.SetLimits(500, 64<<20)()

	t.Run("local flooded", func(t *testing.T) {
		dir := t.TempDir()
		store := &backup.Local{Dir: dir}
		m, _ := takeKeep(t, store, nil, 0)
		// 5000 files elsewhere in the store are not looked at.
		os.MkdirAll(filepath.Join(dir, "other"), 0o700)
		for i := 0; i < 5000; i++ {
			os.WriteFile(filepath.Join(dir, "other", fmt.Sprint(i)), nil, 0o600)
		}
		if l, err := backup.List(ctx, store, want, nil); err != nil || len(l.Complete) != 1 {
			t.Fatalf("list beside 5000 other files: %+v %v", l, err)
		}
		flood := filepath.Join(dir, "proj", "web", "junk")
		os.MkdirAll(flood, 0o700)
		for i := 0; i < 600; i++ {
			os.WriteFile(filepath.Join(flood, fmt.Sprint(i)), nil, 0o600)
		}
		_, err := backup.List(ctx, store, want, nil)
		if !errors.Is(err, backup.ErrTooManyObjects) || !strings.Contains(err.Error(), "more than 500 objects under proj/web/") {
			t.Errorf("list: %v", err)
		}
		m2, warned := takeKeep(t, store, nil, 1)
		if text := strings.Join(warned, "\n"); !strings.Contains(text, "is complete, but old backups were not removed") {
			t.Errorf("warning: %q", text)
		}
		for _, id := range []string{m.ID, m2.ID} {
			if _, err := os.Stat(filepath.Join(dir, backup.Dir("proj", "web"), id, backup.ManifestName)); err != nil {
				t.Errorf("backup %s: %v", id, err)
			}
		}
	})

	t.Run("s3 that never stops paging", func(t *testing.T) {
		var requests atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := requests.Add(1)
			w.Header().Set("Content-Type", "application/xml")
			// One key in the prefix and one outside it per page, and always "truncated".
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>proj/web/</Prefix><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated><NextContinuationToken>t%d</NextContinuationToken><Contents><Key>proj/web/20260101T000000.000Z-r1/x%d</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><Size>1</Size></Contents><Contents><Key>elsewhere/%d</Key><LastModified>2026-01-01T00:00:00.000Z</LastModified><Size>1</Size></Contents></ListBucketResult>`, n, n, n)
		}))
		defer srv.Close()
		t.Setenv("AWS_ACCESS_KEY_ID", "k")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
		store, err := backup.NewS3(ctx, backup.S3Config{Bucket: "b", Endpoint: srv.URL, PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = store.List(ctx, "proj/web/")
		if !errors.Is(err, backup.ErrTooManyObjects) {
			t.Errorf("list: %v", err)
		}
		if n := requests.Load(); n > 500 {
			t.Errorf("%d requests for a listing bounded at 500 keys", n)
		}
	})

	t.Run("s3 keys outside the prefix", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/xml")
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>false</IsTruncated><Contents><Key>20260101T000000.000Z-r1/manifest.json</Key><Size>1</Size></Contents><Contents><Key>proj/webx/20260101T000000.000Z-r1/manifest.json</Key><Size>1</Size></Contents><Contents><Key>proj/web/20260101T000000.000Z-r1/manifest.json</Key><Size>1</Size></Contents></ListBucketResult>`)
		}))
		defer srv.Close()
		t.Setenv("AWS_ACCESS_KEY_ID", "k")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "s")
		store, _ := backup.NewS3(ctx, backup.S3Config{Bucket: "b", Endpoint: srv.URL, PathStyle: true})
		list, err := store.List(ctx, "proj/web/")
		if err != nil || len(list) != 1 || list[0].Key != "proj/web/20260101T000000.000Z-r1/manifest.json" {
			t.Errorf("list: %+v %v", list, err)
		}
	})
}

// The manifests one listing reads are bounded in all: newer junk manifests of 1 MiB each use
// up the budget, and the older genuine backups are listed as not read, and never deleted.
func TestManifestBudget(t *testing.T) {
	ctx := context.Background()
	defer backup.SetLimits(100_000, 3<<20)()
	store := newMemStore()
	var genuine []*backup.Manifest
	for i := 0; i < 3; i++ {
		m, _ := takeKeep(t, store, nil, 0)
		genuine = append(genuine, m)
	}
	for i := 0; i < 4; i++ {
		id := idAt(time.Now().Add(time.Duration(i)*time.Second), 800+i)
		store.Put(ctx, backup.Dir("proj", "web")+id+"/"+backup.ManifestName, bytes.NewReader(append([]byte("{}"), bytes.Repeat([]byte(" "), 1<<20-2)...)))
	}
	_, warned := takeKeep(t, store, nil, 1)
	l, err := backup.List(ctx, store, want, nil)
	if err != nil {
		t.Fatal(err)
	}
	notRead := 0
	for _, r := range l.Refused {
		if strings.Contains(r.Reason, "was not read") {
			notRead++
		}
	}
	if notRead == 0 {
		t.Errorf("nothing listed as not read: %+v", l.Refused)
	}
	for _, g := range genuine {
		if _, err := store.Get(ctx, backup.Dir("proj", "web")+g.ID+"/"+backup.ManifestName); err != nil {
			t.Errorf("genuine backup %s was deleted although it was not read", g.ID)
		}
	}
	if !strings.Contains(strings.Join(warned, "\n"), "retention ignored") {
		t.Errorf("warnings: %q", warned)
	}
}

// A local store follows no symbolic link, even one that stays inside it (a service's directory
// made a link to another's would otherwise be pruned as its own), and a FIFO or device put in
// place of a manifest or an archive is refused at once instead of hanging the read.
func TestLocalStoreFollowsNoLinks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	store := &backup.Local{Dir: dir}
	victimWant := backup.Expect{Project: "victim", Service: "web"}
	var victims []string
	for i := 0; i < 3; i++ {
		m, err := backup.Take(ctx, backup.Request{Store: store, Source: &memSource{map[string][]byte{"/data": tarOf(t, entry{name: "data/x", body: "victim"})}},
			Project: "victim", Service: "web", Release: i + 1, ContainerID: "c", Consistency: "none", Volumes: []backup.Volume{{Name: "data", Target: "/data"}}})
		if err != nil {
			t.Fatal(err)
		}
		victims = append(victims, m.ID)
	}
	// proj/web is a link to victim/web.
	os.MkdirAll(filepath.Join(dir, "proj"), 0o700)
	os.Symlink("../victim/web", filepath.Join(dir, "proj", "web"))
	if _, err := backup.List(ctx, store, want, nil); err == nil || !strings.Contains(err.Error(), "proj/web is a symbolic link") {
		t.Errorf("list through a link: %v", err)
	}
	if _, err := backup.Take(ctx, backup.Request{Store: store, Source: &memSource{map[string][]byte{"/data": tarOf(t, entry{name: "data/x", body: "x"})}},
		Project: "proj", Service: "web", Release: 9, ContainerID: "c", Consistency: "none", Keep: 1, Volumes: []backup.Volume{{Name: "data", Target: "/data"}}}); err == nil {
		t.Error("a backup was written through a link")
	}
	if _, err := store.Get(ctx, "proj/web/"+victims[0]+"/"+backup.ManifestName); err == nil {
		t.Error("read through a link")
	}
	if err := store.Delete(ctx, "proj/web/"+victims[0]+"/"+backup.ManifestName); err == nil {
		t.Error("deleted through a link")
	}
	os.Remove(filepath.Join(dir, "proj", "web"))

	// A backup's directory that is a link to another's.
	m, _ := takeKeep(t, store, nil, 0)
	os.Symlink("../../victim/web/"+victims[0], filepath.Join(dir, "proj", "web", "20200101T000000.000Z-r1"))
	os.Symlink("../../../victim/web/"+victims[1]+"/"+backup.ManifestName, filepath.Join(dir, "proj", "web", m.ID, "linked.json"))
	takeKeep(t, store, nil, 1)
	if l, err := backup.List(ctx, store, victimWant, nil); err != nil || len(l.Complete) != 3 {
		t.Errorf("the victim's backups: %+v %v", l, err)
	}

	// A FIFO as a manifest and as an archive; a directory as an archive.
	m, _ = takeKeep(t, store, nil, 0)
	bdir := filepath.Join(dir, backup.Dir("proj", "web"), m.ID)
	archive := filepath.Join(bdir, m.Volumes[0].Key)
	os.Remove(archive)
	if err := syscall.Mkfifo(archive, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- backup.Verify(ctx, store, m, nil, t.TempDir()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "is not a regular file") {
			t.Errorf("verify of a FIFO archive: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("verify hangs on a FIFO put in place of an archive")
	}
	os.Remove(archive)
	os.Mkdir(archive, 0o700)
	if err := backup.Verify(ctx, store, m, nil, t.TempDir()); err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Errorf("verify of a directory archive: %v", err)
	}
	manifest := filepath.Join(bdir, backup.ManifestName)
	os.Remove(manifest)
	syscall.Mkfifo(manifest, 0o600)
	go func() { _, err := store.Get(ctx, backup.Dir("proj", "web")+m.ID+"/"+backup.ManifestName); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("a FIFO manifest was opened")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("get hangs on a FIFO manifest")
	}
	l, err := backup.List(ctx, store, want, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range l.Complete {
		if c.ID == m.ID {
			t.Error("a backup whose manifest is a FIFO is offered")
		}
	}
}

// Compression and encryption are read within bounds: a zstd frame that asks for a window of
// 512 MiB or 2 GiB is refused before the decoder allocates it, and an age header with more
// stanzas or bytes than age reads is refused.
func TestHostileCompressionAndEncryption(t *testing.T) {
	ctx := context.Background()
	frame := func(windowLog int) []byte {
		b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte((windowLog - 10) << 3)}
		body := []byte("not much")
		n := len(body)<<3 | 1 // last block, raw
		b = append(b, byte(n), byte(n>>8), byte(n>>16))
		return append(b, body...)
	}
	for _, log := range []int{29, 31} {
		t.Run(fmt.Sprintf("zstd window 2^%d", log), func(t *testing.T) {
			store := &backup.Local{Dir: t.TempDir()}
			id := idAt(time.Now().Add(-time.Minute), 1)
			plant(t, store, id, frame(log), 1<<20, nil)
			m, err := backup.Find(ctx, store, want, nil, id)
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err = backup.Verify(ctx, store, m, nil, t.TempDir())
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), "window") {
				t.Errorf("verify: %v", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
				t.Errorf("verify allocated %d MiB for a frame of %d bytes", grew>>20, len(frame(log)))
			}
		})
	}
	id, _ := age.GenerateX25519Identity()
	keys := &backup.Keys{Identities: []age.Identity{id}}
	headers := map[string][]byte{}
	var many bytes.Buffer
	many.WriteString("age-encryption.org/v1\n")
	for i := 0; i < 1025; i++ {
		many.WriteString("-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\nEmECAEcKN+n/Vs9SbWiV+Hu0r+E8R77DdWYyd83nw7U\n")
	}
	many.WriteString("--- Vn+54jqiiUCE+WZcEVY3f1sqHjlu/z1LCQ/T7Xm7qI0\n")
	headers["1025 stanzas"] = many.Bytes()
	big := []byte("age-encryption.org/v1\n-> X25519 " + strings.Repeat("A", 3<<20) + "\n")
	headers["a 3 MiB header line"] = big
	for name, body := range headers {
		t.Run("age "+name, func(t *testing.T) {
			store := &backup.Local{Dir: t.TempDir()}
			bid := idAt(time.Now().Add(-time.Minute), 1)
			plant(t, store, bid, body, 1<<20, func(m map[string]any) {
				m["encryption"] = "age"
				m["volumes"].([]any)[0].(map[string]any)["key"] = "volume-data.tar.zst.age"
			})
			// plant stored the archive under the plain name: move it.
			os.Rename(filepath.Join(store.Dir, backup.Dir("proj", "web"), bid, "volume-data.tar.zst"), filepath.Join(store.Dir, backup.Dir("proj", "web"), bid, "volume-data.tar.zst.age"))
			m, err := backup.Find(ctx, store, want, keys, bid)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err = backup.Verify(ctx, store, m, keys, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), "decrypt") {
				t.Errorf("verify: %v", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("refusing it took %v", d)
			}
		})
	}
}

// A backup dated a few minutes ahead (another machine's clock) is offered; one dated beyond
// the skew is refused, and says why.
func TestClockSkew(t *testing.T) {
	ctx := context.Background()
	store := newMemStore()
	g, _ := takeKeep(t, store, nil, 0)
	rc, _ := store.Get(ctx, backup.Dir("proj", "web")+g.ID+"/"+g.Volumes[0].Key)
	archive := new(bytes.Buffer)
	archive.ReadFrom(rc)
	ahead, far := idAt(time.Now().Add(5*time.Minute), 1), idAt(time.Now().Add(20*time.Minute), 2)
	for _, id := range []string{ahead, far} {
		plant(t, store, id, archive.Bytes(), g.Volumes[0].Bytes, nil)
	}
	l, err := backup.List(ctx, store, want, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Complete) != 2 || l.Complete[0].ID != ahead || len(l.Refused) != 1 || l.Refused[0].ID != far || !strings.Contains(l.Refused[0].Reason, "dated in the future") {
		t.Errorf("listing: %d complete (%v), refused %+v", len(l.Complete), l.Complete[0].ID, l.Refused)
	}
}

// A whole ID finds its backup whatever else the store holds: a copy of it under the ID with a
// digit more ("...-r3" and "...-r31"), in every kind of store, signed or not. A part of an ID
// that matches both is still ambiguous.
func TestFindByWholeID(t *testing.T) {
	ctx := context.Background()
	key := &backup.Keys{SigningKey: []byte("0123456789abcdef-signing")}
	stores := map[string]func(t *testing.T) backup.Store{
		"local": func(t *testing.T) backup.Store { return &backup.Local{Dir: t.TempDir()} },
		"mem":   func(t *testing.T) backup.Store { return newMemStore() },
		"s3":    func(t *testing.T) backup.Store { return s3test.Store(t, "find/") },
	}
	for _, kind := range []string{"local", "mem", "s3"} {
		for _, keys := range []*backup.Keys{nil, key} {
			t.Run(fmt.Sprintf("%s/signed=%v", kind, keys != nil), func(t *testing.T) {
				store := stores[kind](t)
				g, _ := takeKeep(t, store, keys, 0)
				copyBackup(t, store, g, g.ID+"1", func(m map[string]any) { delete(m, "signature") })
				found, err := backup.Find(ctx, store, want, keys, g.ID)
				if err != nil || found.ID != g.ID {
					t.Fatalf("find %s: %+v %v", g.ID, found, err)
				}
				if _, err := backup.Find(ctx, store, want, keys, g.ID[:20]); err == nil || !strings.Contains(err.Error(), "matches 2 backups") {
					t.Errorf("a part of both IDs: %v", err)
				}
			})
		}
	}
}

// copyBackup writes backup g again under another ID, as someone with write access to the store
// would, with edit applied to its manifest.
func copyBackup(t *testing.T, store backup.Store, g *backup.Manifest, id string, edit func(m map[string]any)) {
	t.Helper()
	ctx := context.Background()
	dir := backup.Dir("proj", "web")
	for _, key := range []string{g.Volumes[0].Key, backup.ManifestName} {
		rc, err := store.Get(ctx, dir+g.ID+"/"+key)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if key == backup.ManifestName {
			b = manifestAs(g, id, edit)
		}
		if err := store.Put(ctx, dir+id+"/"+key, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
}

// With a signing key, junk manifests never keep a signed backup from being read: 65 of 1 MiB,
// dated after the genuine backups and before now, use up the listing's budget, and every signed
// backup is still listed, found and counted, and a prune with keep = 2 deletes exactly the
// oldest genuine one.
func TestJunkDoesNotStarveSignedBackups(t *testing.T) {
	ctx := context.Background()
	keys := &backup.Keys{SigningKey: []byte("0123456789abcdef-signing")}
	for _, kind := range []string{"local", "mem"} {
		t.Run(kind, func(t *testing.T) {
			var store backup.Store = newMemStore()
			if kind == "local" {
				store = &backup.Local{Dir: t.TempDir()}
			}
			var genuine []*backup.Manifest
			for i := 0; i < 3; i++ {
				m, _ := takeKeep(t, store, keys, 0)
				genuine = append(genuine, m)
			}
			junk := bytes.Repeat([]byte(" "), 1<<20)
			now := time.Now()
			for i := 0; i < 65; i++ {
				id := idAt(now.Add(time.Duration(i+1)*time.Second), 900+i)
				if err := store.Put(ctx, backup.Dir("proj", "web")+id+"/"+backup.ManifestName, bytes.NewReader(junk)); err != nil {
					t.Fatal(err)
				}
			}
			l, err := backup.List(ctx, store, want, keys)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.Complete) != 3 {
				t.Errorf("%d complete backups listed, want the 3 signed ones", len(l.Complete))
			}
			for _, g := range genuine {
				if m, err := backup.Find(ctx, store, want, keys, g.ID); err != nil || m.Signed != backup.SignedOK {
					t.Errorf("find %s: %v", g.ID, err)
				}
			}
			newest, _ := takeKeep(t, store, keys, 2)
			for i, g := range append(genuine, newest) {
				_, err := store.Get(ctx, backup.Dir("proj", "web")+g.ID+"/"+backup.ManifestName)
				if (i < 2) != (err != nil) {
					t.Errorf("genuine backup %d (%s) after a prune with keep = 2: %v", i, g.ID, err)
				}
			}
		})
	}
}

// unreadable is a store that will not give some objects (an S3 object of the GLACIER class,
// an SSE-C object without its key, a local file the deployer cannot read).
type unreadable struct {
	backup.Store
	bad string
}

func (u unreadable) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if strings.Contains(key, u.bad) {
		return nil, errors.New("InvalidObjectState: The operation is not valid for the object's storage class")
	}
	return u.Store.Get(ctx, key)
}

// A manifest the store will not give refuses its own backup, not the listing: the others are
// listed, found and pruned. A store that gives none fails, naming why.
func TestUnreadableManifest(t *testing.T) {
	ctx := context.Background()
	keys := &backup.Keys{SigningKey: []byte("0123456789abcdef-signing")}
	mem := newMemStore()
	var genuine []*backup.Manifest
	for i := 0; i < 2; i++ {
		m, _ := takeKeep(t, mem, keys, 0)
		genuine = append(genuine, m)
	}
	junk := idAt(time.Now().Add(-time.Hour), 5)
	mem.Put(ctx, backup.Dir("proj", "web")+junk+"/"+backup.ManifestName, strings.NewReader("{}"))
	store := unreadable{mem, junk}
	l, err := backup.List(ctx, store, want, keys)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(l.Complete) != 2 || len(l.Refused) != 1 || !strings.Contains(l.Refused[0].Reason, "could not be read (InvalidObjectState") {
		t.Errorf("listing: %d complete, refused %+v", len(l.Complete), l.Refused)
	}
	if _, err := backup.Find(ctx, store, want, keys, genuine[1].ID); err != nil {
		t.Errorf("find: %v", err)
	}
	rep, err := backup.Prune(ctx, store, want, keys, 1, "")
	if err != nil || fmt.Sprint(rep.Deleted) != "["+genuine[0].ID+"]" {
		t.Errorf("prune: %+v %v", rep, err)
	}
	if _, err := backup.List(ctx, unreadable{mem, "proj/"}, want, keys); err == nil || !strings.Contains(err.Error(), "InvalidObjectState") {
		t.Errorf("a store that gives nothing: %v", err)
	}
}
