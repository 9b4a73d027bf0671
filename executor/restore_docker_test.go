package executor_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// noDB is a backup block without a database, for tests about volumes.
func noDB(s *config.Service) { s.SQLite = nil }

// deployWithBackup deploys v1, puts files into the data volume, and deploys v2, which backs the
// volume up before its cutover; it returns that backup.
func (r *rig) deployWithBackup(store *config.Store, mod func(s *config.Service), files map[string][]byte) *backup.Manifest {
	r.t.Helper()
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		r.t.Fatal(so.Error)
	}
	r.putFiles(r.liveID(), "/data", files)
	if so := r.apply(r.configWithStore("v2", store, mod)); so.Error != "" {
		r.t.Fatal(so.Error)
	}
	l := r.backups(store, mod, "")
	if len(l.Complete) == 0 {
		r.t.Fatalf("no backup: %+v", l)
	}
	return l.Complete[0]
}

func (r *rig) backups(store *config.Store, mod func(s *config.Service), identity string) *backup.Listing {
	r.t.Helper()
	l, err := r.serviceBackups(store, mod, identity).List(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return l
}

// serviceBackups opens the app's backups in store, as the configuration with mod sees them.
func (r *rig) serviceBackups(store *config.Store, mod func(s *config.Service), identity string) *executor.ServiceBackups {
	r.t.Helper()
	p := r.configWithStore("v2", store, mod)
	sb, err := executor.OpenBackups(context.Background(), p, p.Service("app"), identity)
	if err != nil {
		r.t.Fatal(err)
	}
	return sb
}

// restore prepares and runs a restore as `deployer backups restore -auto-approve` does.
func (r *rig) restore(p *config.Project, id string, opts executor.RestoreOptions, identity string) (*executor.RestoreResult, error) {
	a := r.applier(p)
	a.SelfBinary, a.IdentityFile = staticDeployer(r.t), identity
	rp, err := a.PrepareRestore(context.Background(), "app", id, opts)
	if err != nil {
		return nil, err
	}
	return a.Restore(context.Background(), "app", rp)
}

// dataFiles is what the backed-up files look like, without the files the app writes at start.
func (r *rig) dataFiles(id string) map[string]string {
	out := map[string]string{}
	for name, sum := range r.volumeHashes(id, "/data") {
		if strings.HasSuffix(name, "history") || strings.Contains(name, "started-") {
			continue
		}
		out[name] = sum
	}
	return out
}

// A restore works whether the live release runs, is stopped, or is gone, and in every case the
// data it replaces is backed up first.
func TestRestoreWhateverTheLiveReleaseIs(t *testing.T) {
	for _, state := range []string{"running", "stopped", "gone"} {
		t.Run(state, func(t *testing.T) {
			r := newRig(t)
			store := localStore(t)
			m := r.deployWithBackup(store, noDB, map[string][]byte{"a.txt": []byte("backed up")})
			r.putFiles(r.liveID(), "/data", map[string][]byte{"a.txt": []byte("current"), "b.txt": []byte("only now")})
			current := r.dataFiles(r.liveID())
			ctx := context.Background()
			switch state {
			case "stopped":
				r.eng.StopContainer(ctx, r.liveID(), 0)
			case "gone":
				obs, _ := plan.Observe(ctx, r.eng, projectOnly(r.project))
				for _, c := range obs.All {
					r.eng.RemoveContainer(ctx, c.ID)
				}
			}
			p := r.configWithStore("v2", store, noDB)
			res, err := r.restore(p, m.ID, executor.RestoreOptions{}, "")
			if err != nil {
				t.Fatal(err)
			}
			if res.Safety == nil {
				t.Fatal("no backup of the data before the restore")
			}
			if state == "gone" {
				if res.Started {
					t.Error("a release was started although none was live")
				}
				if so := r.apply(p); so.Error != "" {
					t.Fatal(so.Error)
				}
			}
			if got := r.get("/"); got != "version=v2" {
				t.Errorf("after the restore: %q", got)
			}
			got := r.dataFiles(r.liveID())
			if len(got) != 1 || got["data/a.txt"] != sha("backed up") {
				t.Errorf("restored files: %v", got)
			}
			// The safety backup holds exactly what was there before.
			sb, _ := executor.OpenBackups(ctx, p, p.Service("app"), "")
			rc, err := backup.OpenVolume(ctx, sb.Store, res.Safety, r.project+"-data", sb.Keys, "")
			if err != nil {
				t.Fatal(err)
			}
			saved := tarHashes(t, rc)
			rc.Close()
			for name, sum := range current {
				if saved[name] != sum {
					t.Errorf("the safety backup lacks %s as it was", name)
				}
			}
		})
	}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// tarHashes returns sha256 of every regular file of a tar stream.
func tarHashes(t testing.TB, r io.Reader) map[string]string {
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			h := sha256.New()
			io.Copy(h, tr)
			out[hdr.Name] = hex.EncodeToString(h.Sum(nil))
		}
	}
}

// storeDir is where a local store keeps a backup's objects.
func storeDir(store *config.Store, project string, m *backup.Manifest) string {
	return filepath.Join(store.Directory, backup.Dir(project, "app"), m.ID)
}

// editManifest rewrites a backup's manifest as someone with write access to the store would.
func editManifest(t *testing.T, dir string, edit func(raw map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, backup.ManifestName)
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

// A manifest that names another project's volume cannot make restore touch it: the volume is
// refused, by name, before anything is stopped, backed up or written.
func TestRestoreRefusesForeignVolume(t *testing.T) {
	victim := newRig(t)
	if so := victim.apply(victim.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	victim.putFiles(victim.liveID(), "/data", map[string][]byte{"theirs.txt": []byte("another project's data")})
	before := victim.dataFiles(victim.liveID())

	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, map[string][]byte{"attack.txt": []byte("attacker's files")})
	dir := storeDir(store, r.project, m)
	foreign := victim.project + "-data"
	os.Rename(filepath.Join(dir, m.Volumes[0].Key), filepath.Join(dir, "volume-"+foreign+".tar.zst"))
	editManifest(t, dir, func(raw map[string]any) {
		v := raw["volumes"].([]any)[0].(map[string]any)
		v["name"], v["key"] = foreign, "volume-"+foreign+".tar.zst"
	})
	_, err := r.restore(r.configWithStore("v2", store, noDB), m.ID, executor.RestoreOptions{}, "")
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("holds volume %q, which service.app does not back up", foreign)) {
		t.Fatalf("restore: %v", err)
	}
	if got := victim.dataFiles(victim.liveID()); fmt.Sprint(got) != fmt.Sprint(before) {
		t.Errorf("the other project's volume changed: %v", got)
	}
	if got := victim.get("/"); got != "version=v1" {
		t.Errorf("the other project: %q", got)
	}
	if l := r.backups(store, noDB, ""); len(l.Complete) != 1 {
		t.Errorf("a safety backup was taken before the refusal: %d backups", len(l.Complete))
	}
	// Mapping it onto a volume the configuration does not back up is refused as well.
	_, err = r.restore(r.configWithStore("v2", store, noDB), m.ID, executor.RestoreOptions{Map: map[string]string{foreign: foreign}}, "")
	if err == nil || !strings.Contains(err.Error(), "does not back up a volume") {
		t.Errorf("mapped onto a foreign volume: %v", err)
	}
}

// craft replaces a backup's archive with one built by hand, as an attacker who can write to the
// store would, fixing the manifest's sizes and checksum to match.
func craft(t *testing.T, dir string, m *backup.Manifest, build func(tw *tar.Writer)) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	build(tw)
	tw.Close()
	var z bytes.Buffer
	zw, _ := zstd.NewWriter(&z)
	zw.Write(raw.Bytes())
	zw.Close()
	os.WriteFile(filepath.Join(dir, m.Volumes[0].Key), z.Bytes(), 0o600)
	sum := sha256.Sum256(z.Bytes())
	editManifest(t, dir, func(rm map[string]any) {
		v := rm["volumes"].([]any)[0].(map[string]any)
		v["size"], v["sha256"], v["uncompressed_bytes"] = z.Len(), hex.EncodeToString(sum[:]), raw.Len()
	})
}

// A crafted archive: hard links come back as hard links, device nodes are never created,
// setuid and setgid bits are cleared, entries that climb out or pass through a symbolic link are
// left out, and the restore says what it skipped and changed.
func TestRestoreCraftedArchive(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	m := r.deployWithBackup(store, noDB, map[string][]byte{"a.txt": []byte("x")})
	craft(t, storeDir(store, r.project, m), m, func(tw *tar.Writer) {
		add := func(h *tar.Header, body string) {
			h.Size = int64(len(body))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
			tw.WriteHeader(h)
			tw.Write([]byte(body))
		}
		add(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755}, "")
		add(&tar.Header{Name: "data/original.txt", Typeflag: tar.TypeReg}, "linked content")
		add(&tar.Header{Name: "data/hardlink.txt", Typeflag: tar.TypeLink, Linkname: "data/original.txt"}, "")
		add(&tar.Header{Name: "data/kmem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 2, Mode: 0o666}, "")
		add(&tar.Header{Name: "data/disk", Typeflag: tar.TypeBlock, Devmajor: 8, Devminor: 0, Mode: 0o666}, "")
		add(&tar.Header{Name: "data/shell", Typeflag: tar.TypeReg, Mode: 0o4755}, "#!/bin/sh")
		add(&tar.Header{Name: "data/../../../escape.txt", Typeflag: tar.TypeReg}, "out")
		add(&tar.Header{Name: "data/etc", Typeflag: tar.TypeSymlink, Linkname: "/etc"}, "")
		add(&tar.Header{Name: "data/etc/cron-job", Typeflag: tar.TypeReg}, "* * * * * root sh")
	})
	res, err := r.restore(r.configWithStore("v2", store, noDB), m.ID, executor.RestoreOptions{}, "")
	if err != nil {
		t.Fatal(err)
	}
	report := strings.Join(res.Tamed[r.project+"-data"], "\n")
	for _, w := range []string{"skipped 2 (a device node): data/kmem, data/disk", "skipped 1 (outside the volume)", "skipped 1 (inside a symbolic link)", "changed 1 (setuid/setgid bit cleared): data/shell"} {
		if !strings.Contains(report, w) {
			t.Errorf("report lacks %q:\n%s", w, report)
		}
	}
	rc, err := r.eng.CopyFrom(context.Background(), r.liveID(), "/data")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got[h.Name] = h
	}
	// The engine names the first of the two it meets (alphabetically) the file, the other the link.
	if h := got["data/original.txt"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "data/hardlink.txt" {
		t.Errorf("the hard link was not restored as one: %+v", h)
	}
	if h := got["data/shell"]; h == nil || h.Mode&0o6000 != 0 {
		t.Errorf("setuid file: %+v", h)
	}
	for _, name := range []string{"data/kmem", "data/disk", "data/etc/cron-job", "escape.txt"} {
		if got[name] != nil {
			t.Errorf("%s was created", name)
		}
	}
	if got := r.get("/"); got != "version=v2" {
		t.Errorf("serving %q", got)
	}
}

// A volume that holds hard links is backed up and restored whole, through the real engine.
func TestRestoreHardLinks(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	if so := r.apply(r.configWithStore("v1", store, noDB)); so.Error != "" {
		t.Fatal(so.Error)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "data/a.txt", Mode: 0o644, Size: 5})
	tw.Write([]byte("hello"))
	tw.WriteHeader(&tar.Header{Name: "data/sub/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "data/sub/b.txt", Typeflag: tar.TypeLink, Linkname: "data/a.txt"})
	tw.Close()
	if err := r.eng.CopyTo(context.Background(), r.liveID(), "/", &buf); err != nil {
		t.Fatal(err)
	}
	if so := r.apply(r.configWithStore("v2", store, noDB)); so.Error != "" {
		t.Fatal(so.Error)
	}
	m := r.backups(store, noDB, "").Complete[0]
	r.putFiles(r.liveID(), "/data", map[string][]byte{"a.txt": []byte("changed")})
	if _, err := r.restore(r.configWithStore("v2", store, noDB), m.ID, executor.RestoreOptions{}, ""); err != nil {
		t.Fatal(err)
	}
	rc, _ := r.eng.CopyFrom(context.Background(), r.liveID(), "/data")
	defer rc.Close()
	tr := tar.NewReader(rc)
	links := 0
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		if h.Name == "data/sub/b.txt" && h.Typeflag == tar.TypeLink {
			links++
		}
	}
	if links != 1 || r.dataFiles(r.liveID())["data/a.txt"] != sha("hello") {
		t.Errorf("hard link restored %d times; files %v", links, r.dataFiles(r.liveID()))
	}
}

// With age recipients, backups are encrypted on the deployer's side; restore with the identity
// gives the volume back byte for byte, a wrong identity is refused before anything is touched.
func TestEncryptedBackupRoundTrip(t *testing.T) {
	for _, kind := range []string{"local", "s3"} {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t)
			store := localStore(t)
			if kind == "s3" {
				store = s3Store(t)
			}
			id, _ := age.GenerateX25519Identity()
			wrong, _ := age.GenerateX25519Identity()
			store.AgeRecipients = []string{id.Recipient().String()}
			idFile := filepath.Join(t.TempDir(), "key.txt")
			os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600)
			wrongFile := filepath.Join(t.TempDir(), "wrong.txt")
			os.WriteFile(wrongFile, []byte(wrong.String()+"\n"), 0o600)

			big := randomBytes(3 << 20)
			m := r.deployWithBackup(store, nil, map[string][]byte{"app.db": sqliteFile(t, 100), "blob.bin": big})
			if m.Encryption != "age" {
				t.Fatalf("manifest: %+v", m)
			}
			want := r.dataFiles(r.liveID())
			r.putFiles(r.liveID(), "/data", map[string][]byte{"blob.bin": []byte("damaged")})
			damaged := r.dataFiles(r.liveID())
			p := r.configWithStore("v2", store, nil)
			if _, err := r.restore(p, m.ID, executor.RestoreOptions{}, ""); err == nil || !strings.Contains(err.Error(), "encrypted with age: give the identity") {
				t.Errorf("without an identity: %v", err)
			}
			if _, err := r.restore(p, m.ID, executor.RestoreOptions{}, wrongFile); err == nil || !strings.Contains(err.Error(), "decrypt") {
				t.Errorf("wrong identity: %v", err)
			}
			if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(damaged) {
				t.Error("a refused restore touched the volume")
			}
			if _, err := r.restore(p, m.ID, executor.RestoreOptions{}, idFile); err != nil {
				t.Fatal(err)
			}
			if got := r.dataFiles(r.liveID()); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("restored volume differs:\n%v\nwant\n%v", got, want)
			}
		})
	}
}

// With a signing key, a manifest changed by someone without the key is refused by verify and
// restore; an unsigned one is restored only when the operator says so.
func TestSignedManifests(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	store.SigningKey = "a-signing-key-of-the-team-0123456789"
	m := r.deployWithBackup(store, noDB, map[string][]byte{"a.txt": []byte("signed data")})
	if m.Signed != backup.SignedOK {
		t.Fatalf("signed: %q", m.Signed)
	}
	p := r.configWithStore("v2", store, noDB)
	a := r.applier(p)
	dir := storeDir(store, r.project, m)
	editManifest(t, dir, func(raw map[string]any) { raw["release"] = 99 })
	if _, err := a.VerifyBackup(context.Background(), "app", m.ID); err == nil || !strings.Contains(err.Error(), "signature does not match") {
		t.Errorf("verify of a tampered manifest: %v", err)
	}
	if _, err := r.restore(p, m.ID, executor.RestoreOptions{AllowUnsigned: true}, ""); err == nil || !strings.Contains(err.Error(), "signature does not match") {
		t.Errorf("restore of a tampered manifest: %v", err)
	}
	editManifest(t, dir, func(raw map[string]any) { raw["release"] = 1; delete(raw, "signature") })
	if _, err := r.restore(p, m.ID, executor.RestoreOptions{}, ""); err == nil || !strings.Contains(err.Error(), "-allow-unsigned") {
		t.Errorf("restore of an unsigned backup: %v", err)
	}
	a = r.applier(p)
	a.SelfBinary = staticDeployer(t)
	rp, err := a.PrepareRestore(context.Background(), "app", m.ID, executor.RestoreOptions{AllowUnsigned: true})
	if err != nil || len(rp.Warnings) != 1 || !strings.Contains(rp.Warnings[0], "is unsigned: restoring it because -allow-unsigned was given") {
		t.Fatalf("with -allow-unsigned: %+v %v", rp, err)
	}
	if _, err := a.Restore(context.Background(), "app", rp); err != nil {
		t.Fatal(err)
	}
}
