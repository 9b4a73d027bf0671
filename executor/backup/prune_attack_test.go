package backup_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
)

// takeKeep takes a genuine backup of proj/web with retention keep, returning it and what Take
// warned about.
func takeKeep(t *testing.T, store backup.Store, keys *backup.Keys, keep int) (*backup.Manifest, []string) {
	t.Helper()
	var warned []string
	// IDs have millisecond precision: wait for the next one, so two backups never share one.
	for start := time.Now().UTC().Truncate(time.Millisecond); !time.Now().UTC().Truncate(time.Millisecond).After(start); {
	}
	m, err := backup.Take(context.Background(), backup.Request{Store: store, Source: &memSource{map[string][]byte{"/data": tarOf(t, entry{name: "data/", typ: tar.TypeDir}, entry{name: "data/f.txt", body: "genuine"})}},
		Project: "proj", Service: "web", Release: 3, ContainerID: "c", Consistency: "none", Keys: keys, Keep: keep,
		Volumes: []backup.Volume{{Name: "data", Target: "/data"}}, TempDir: t.TempDir(), Warn: func(s string) { warned = append(warned, s) }})
	if err != nil {
		t.Fatal(err)
	}
	return m, warned
}

// attack writes 100 junk "backups" into proj/web as someone with write access to the store
// would, copying a genuine backup's archive so that everything but what is checked looks
// right. It returns the IDs (or names) it wrote, and how many of them are unsigned forgeries
// (listed as UNSIGNED rather than refused).
func attack(t *testing.T, store backup.Store, genuine, oldest *backup.Manifest, signed bool, odd []string) (junk []string, unsigned int) {
	t.Helper()
	ctx := context.Background()
	rc, err := store.Get(ctx, backup.Dir("proj", "web")+genuine.ID+"/"+genuine.Volumes[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	archive, _ := io.ReadAll(rc)
	rc.Close()
	now := time.Now()
	put := func(key string, body []byte) {
		if err := store.Put(ctx, backup.Dir("proj", "web")+key, bytes.NewReader(body)); err != nil {
			t.Fatalf("put %q: %v", key, err)
		}
	}
	manifest := func(id string, edit func(m map[string]any)) []byte { return manifestAs(genuine, id, edit) }
	// forge writes a manifest like the genuine one under another ID (its signature, if any,
	// no longer matches), with the archive beside it.
	forge := func(id string, edit func(m map[string]any)) {
		put(id+"/"+genuine.Volumes[0].Key, archive)
		put(id+"/"+backup.ManifestName, manifest(id, edit))
		junk = append(junk, id)
	}
	n := 0
	next := func(ago time.Duration) string { n++; return idAt(now.Add(-ago), 900+n) }
	for i := 0; i < 20; i++ { // dated in the future: 11 minutes to 70 years ahead
		forge(next(-11*time.Minute-time.Hour*time.Duration(i*i*1500)), nil)
	}
	if signed {
		for i := 0; i < 5; i++ { // recent and unsigned
			forge(next(time.Duration(i+1)*time.Second), func(m map[string]any) { delete(m, "signature") })
			unsigned++
		}
	} else {
		for i := 0; i < 5; i++ { // a format the deployer does not read
			forge(next(time.Duration(i+1)*time.Second), func(m map[string]any) { m["format_version"] = "9" })
		}
	}
	for i := 0; i < 15; i++ { // garbage manifests
		id := next(time.Duration(i+10) * time.Second)
		put(id+"/"+backup.ManifestName, []byte(fmt.Sprintf("{not json %d", i)))
		junk = append(junk, id)
	}
	for i := 0; i < 10; i++ { // another project's and another service's manifests
		field, value := "project", "other"
		if i%2 == 1 {
			field, value = "service", "db"
		}
		forge(next(time.Duration(i+30)*time.Second), func(m map[string]any) { m[field] = value })
	}
	for i := 0; i < 10; i++ { // manifests whose archives are not there
		id := next(time.Duration(i+45) * time.Second)
		put(id+"/"+backup.ManifestName, manifest(id, func(m map[string]any) { delete(m, "signature") }))
		junk = append(junk, id)
	}
	for i := 0; i < 10; i++ { // oversized manifests
		id := next(time.Duration(i+60) * time.Second)
		put(id+"/"+backup.ManifestName, bytes.Repeat([]byte(" "), 1<<20+1))
		junk = append(junk, id)
	}
	for i := 0; i < 10; i++ { // claims the deployer refuses: a key of its own, a negative size
		forge(next(time.Duration(i+75)*time.Second), func(m map[string]any) {
			v := m["volumes"].([]any)[0].(map[string]any)
			if i%2 == 0 {
				v["key"] = "../../../other/web/x/volume-data.tar.zst"
			} else {
				v["size"] = -1
			}
		})
	}
	for _, name := range []string{"latest", "20261128T101500.123Z", "2026-11-28", "r1", "backup", ".hidden", "x-r1",
		"99999999T999999.999Z-r1", "20261128T101500.123Z-r", "manifest.json"} { // directories that are not backups
		put(name+"/"+backup.ManifestName, []byte(`{"format_version":"2"}`))
		junk = append(junk, name)
	}
	for i := 0; i < 10; i++ { // incomplete: archives without a manifest, written now
		id := next(time.Duration(i+90) * time.Second)
		put(id+"/"+genuine.Volumes[0].Key, archive)
		junk = append(junk, id)
	}
	for i, name := range odd { // names only a bucket takes, beside and inside a genuine backup
		put(name+"/"+backup.ManifestName, []byte("{}"))
		put(fmt.Sprintf("%s/odd%d/%s", oldest.ID, i, name), []byte("{}"))
		junk = append(junk, name)
	}
	return junk, unsigned
}

func allKeys(t *testing.T, store backup.Store) map[string]bool {
	list, err := store.List(context.Background(), "proj/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, o := range list {
		out[o.Key] = true
	}
	return out
}

// Someone who can write to the store writes 100 junk, forged and future-dated "backups" into
// a service's directory before a deploy's backup prunes it (keep = 3, four genuine backups):
// only the oldest genuine backup is deleted, nothing of theirs is deleted or counted, the
// backup warns about what it ignored, and the listing says why each was refused.
func TestPruneUnderAttack(t *testing.T) {
	stores := []struct {
		kind string
		open func(t *testing.T) backup.Store
		odd  []string
	}{
		{"local", func(t *testing.T) backup.Store { return &backup.Local{Dir: t.TempDir()} }, nil},
		{"mem", func(t *testing.T) backup.Store { return newMemStore() }, []string{"\x1b]0;owned\x07", "a\nb", "..", ".", " ", "dir//x", "\u202e"}},
		{"s3", func(t *testing.T) backup.Store { return s3test.Store(t, "attack/") }, []string{"a\nb", " ", "tab\there", "\u202e", "%2e%2e", "ünï"}}, // versitygw refuses "." and ".."
	}
	total := 0
	for _, st := range stores {
		for _, signed := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/signed=%v", st.kind, signed), func(t *testing.T) {
				ctx := context.Background()
				store := st.open(t)
				var keys *backup.Keys
				if signed {
					keys = &backup.Keys{SigningKey: []byte("0123456789abcdef-signing")}
				}
				var genuine []*backup.Manifest
				for i := 0; i < 3; i++ {
					m, _ := takeKeep(t, store, keys, 0)
					genuine = append(genuine, m)
				}
				junk, unsigned := attack(t, store, genuine[2], genuine[0], signed, st.odd)
				total += len(junk)
				before := allKeys(t, store)

				m, warned := takeKeep(t, store, keys, 3)
				genuine = append(genuine, m)
				after := allKeys(t, store)

				// Exactly the oldest genuine backup went; the newest three are kept.
				for i, g := range genuine {
					has := after[backup.Dir("proj", "web")+g.ID+"/"+backup.ManifestName]
					if (i == 0) == has {
						t.Errorf("genuine backup %d (%s): present %v after the prune", i, g.ID, has)
					}
				}
				// Nothing else was deleted: not the attacker's, not what they put inside the
				// deleted backup's directory.
				gone := backup.Dir("proj", "web") + genuine[0].ID + "/"
				for k := range before {
					direct := strings.HasPrefix(k, gone) && !strings.Contains(strings.TrimPrefix(k, gone), "/")
					if !after[k] && !direct {
						t.Errorf("%q was deleted", k)
					}
				}
				// The listing says why each is not offered; the backup said how many it ignored.
				l, err := backup.List(ctx, store, want, keys)
				if err != nil {
					t.Fatal(err)
				}
				listed := map[string]bool{}
				for _, r := range l.Refused {
					listed[r.ID] = true
				}
				for _, id := range l.Incomplete {
					listed[id] = true
				}
				nUnsigned := 0
				for _, c := range l.Complete {
					if c.Signed == backup.Unsigned {
						listed[c.ID] = true
						nUnsigned++
					}
				}
				for _, id := range junk {
					if first, _, _ := strings.Cut(id, "/"); !listed[backup.Printable(first)] {
						t.Errorf("%q is not listed as refused, incomplete or unsigned", id)
					}
				}
				if len(l.Complete)-nUnsigned != 3 || nUnsigned != unsigned {
					t.Errorf("listing: %d complete, %d of them unsigned; want 3 genuine and %d unsigned", len(l.Complete), nUnsigned, unsigned)
				}
				wantWarn := fmt.Sprintf("retention ignored %d entries", len(l.Refused)+nUnsigned)
				if text := strings.Join(warned, "\n"); !strings.Contains(text, wantWarn) || !strings.Contains(text, "neither counted nor deleted") {
					t.Errorf("warning: %q, want %q", text, wantWarn)
				}
				for _, r := range l.Refused {
					if strings.ContainsAny(r.ID+r.Reason, "\x1b\x07\n\u202e") {
						t.Errorf("control characters reach the output: %q: %q", r.ID, r.Reason)
					}
				}
			})
		}
	}
	t.Logf("%d junk backups in all", total)
}
