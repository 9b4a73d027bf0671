package executor_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	_ "modernc.org/sqlite"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/backup/s3test"
	"github.com/deployer-dev/deployer/executor/plan"
)

var (
	selfOnce sync.Once
	selfBin  string
	selfErr  error
)

// staticDeployer builds the deployer as releases are built (static), for the restore helper.
func staticDeployer(t testing.TB) string {
	selfOnce.Do(func() {
		dir, err := os.MkdirTemp("", "deployer-static")
		if err != nil {
			selfErr = err
			return
		}
		selfBin = filepath.Join(dir, "deployer")
		cmd := exec.Command("go", "build", "-o", selfBin, "github.com/deployer-dev/deployer/cmd/deployer")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			selfErr = fmt.Errorf("%v: %s", err, out)
		}
	})
	if selfErr != nil {
		t.Fatal(selfErr)
	}
	return selfBin
}

// otherDeployer builds the static deployer again with another version stamped in: another
// binary, so another proxy image, as a new release of the deployer would bring.
func otherDeployer(t testing.TB) string {
	t.Helper()
	other := filepath.Join(t.TempDir(), "deployer")
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version=upgrade-test", "-o", other, "github.com/deployer-dev/deployer/cmd/deployer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return other
}

// sqliteFile makes a SQLite database with a table of n rows and returns its bytes.
func sqliteFile(t testing.TB, n int) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.db")
	db, err := sql.Open("sqlite", p)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE manuals (id INTEGER PRIMARY KEY, body TEXT)"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := db.Exec("INSERT INTO manuals (body) VALUES (?)", strings.Repeat(fmt.Sprintf("manual %d ", i), 20)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corrupt damages a page in the middle of a database, as a bad disk or a torn write would.
func corrupt(db []byte) []byte {
	out := append([]byte(nil), db...)
	page := 4096
	for i := 2 * page; i < 2*page+200 && i < len(out); i++ {
		out[i] = 0xA5
	}
	return out
}

// putFiles writes files into a container's directory through the engine's copy API.
func (r *rig) putFiles(id, dir string, files map[string][]byte) {
	r.t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, b := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	tw.Close()
	if err := r.eng.CopyTo(context.Background(), id, dir, &buf); err != nil {
		r.t.Fatal(err)
	}
}

// volumeHashes returns sha256 of every regular file under dir in the container.
func (r *rig) volumeHashes(id, dir string) map[string]string {
	r.t.Helper()
	rc, err := r.eng.CopyFrom(context.Background(), id, dir)
	if err != nil {
		r.t.Fatal(err)
	}
	defer rc.Close()
	return tarHashes(r.t, rc)
}

func (r *rig) liveID() string {
	obs, err := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
	if err != nil || obs.Services["app"] == nil || obs.Services["app"].Live == nil {
		r.t.Fatalf("no live release: %v", err)
	}
	return obs.Services["app"].Live.ID
}

// withBackup adds a backup block, a SQLite database and the store to a rig's configuration.
func withBackup(store *config.Store, mod func(s *config.Service)) func(s *config.Service) {
	return func(s *config.Service) {
		s.Backup = config.NewBackup()
		s.Backup.Store = store.Name
		s.Backup.Volumes = []string{s.Volumes[0].Name}
		s.Backup.Logs = true
		db := config.NewSQLite("main")
		db.Volume, db.Path = s.Volumes[0].Name, "app.db"
		s.SQLite = []*config.SQLite{db}
		if mod != nil {
			mod(s)
		}
	}
}

func (r *rig) configWithStore(v string, store *config.Store, mod func(s *config.Service)) *config.Project {
	p := r.config(v, withBackup(store, mod))
	p.Stores[store.Name] = store
	return p
}

func localStore(t *testing.T) *config.Store {
	return &config.Store{Name: "local", Kind: "local", Directory: t.TempDir()}
}

func s3Store(t *testing.T) *config.Store {
	c := s3test.Config(t)
	return &config.Store{Name: "s3", Kind: "s3", Bucket: c.Bucket, Endpoint: c.Endpoint, PathStyle: true, Region: "us-east-1", Prefix: "backups/"}
}

// Backup before cutover, wipe the volume, restore: the files are byte-identical and the
// database passes quick_check; against the local store and a real S3 server.
func TestBackupRoundTrip(t *testing.T) {
	for _, kind := range []string{"local", "s3"} {
		t.Run(kind, func(t *testing.T) {
			r := newRig(t)
			store := localStore(t)
			if kind == "s3" {
				store = s3Store(t)
			}
			if so := r.apply(r.configWithStore("v1", store, func(s *config.Service) { s.SQLite = nil })); so.Error != "" {
				t.Fatal(so.Error)
			}
			big := make([]byte, 5<<20)
			rand.Read(big)
			r.putFiles(r.liveID(), "/data", map[string][]byte{"app.db": sqliteFile(t, 200), "uploads/big.bin": big})
			before := r.volumeHashes(r.liveID(), "/data")

			if so := r.apply(r.configWithStore("v2", store, nil)); so.Error != "" {
				t.Fatalf("deploy with backup: %s", so.Error)
			}
			p := r.configWithStore("v2", store, nil)
			sb := r.serviceBackups(store, nil, "")
			l, err := sb.List(context.Background())
			if err != nil || len(l.Complete) != 1 {
				t.Fatalf("backups: %+v %v", l, err)
			}
			m := l.Complete[0]
			if m.Release != 1 || len(m.Volumes) != 1 || m.Volumes[0].Bytes < 5<<20 || m.Logs == nil || len(m.SQLite) != 1 || m.SQLite[0].Result != "ok" {
				t.Errorf("manifest: %+v", m)
			}
			if m.Consistency != "pause" || m.PausedSeconds <= 0 || m.PausedSeconds > 5 {
				t.Errorf("paused %.3fs", m.PausedSeconds)
			}

			// Wipe: damage the database, replace a file, add one that the backup does not have.
			r.putFiles(r.liveID(), "/data", map[string][]byte{"app.db": []byte("gone"), "uploads/big.bin": []byte("x"), "stray.txt": []byte("new")})
			a := r.applier(p)
			a.SelfBinary = staticDeployer(t)
			rp, err := a.PrepareRestore(context.Background(), "app", m.ID[:10], executor.RestoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			res, err := a.Restore(context.Background(), "app", rp)
			if err != nil {
				t.Fatal(err)
			}
			safety := res.Safety
			after := r.volumeHashes(r.liveID(), "/data")
			for name, sum := range before {
				if strings.HasSuffix(name, "history") || strings.Contains(name, "started-") {
					continue // the app appends to these when it starts
				}
				if after[name] != sum {
					t.Errorf("%s differs after the restore", name)
				}
			}
			if _, ok := after["data/stray.txt"]; ok {
				t.Error("a file that is not in the backup survived the restore")
			}
			if got := r.get("/"); got != "version=v2" {
				t.Errorf("after the restore: %q", got)
			}
			// The data before the restore was backed up, and that backup is complete and intact.
			if safety == nil || backup.Verify(context.Background(), sb.Store, safety, sb.Keys, "") != nil {
				t.Errorf("safety backup: %+v", safety)
			}
			db := filepath.Join(t.TempDir(), "restored.db")
			rc, _ := r.eng.CopyFrom(context.Background(), r.liveID(), "/data/app.db")
			tr := tar.NewReader(rc)
			tr.Next()
			f, _ := os.Create(db)
			io.Copy(f, tr)
			f.Close()
			rc.Close()
			if err := backup.QuickCheck(context.Background(), db); err != nil {
				t.Errorf("the restored database: %v", err)
			}
		})
	}
}

// cutProxy forwards TCP to target and cuts the first connection that sends more than limit bytes.
func cutProxy(t *testing.T, target string, limit int64) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var once sync.Once
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(c, u)
				n, _ := io.Copy(u, io.LimitReader(c, limit))
				if n >= limit {
					once.Do(func() {}) // this connection is the one cut
				}
			}(c)
		}
	}()
	return "http://" + l.Addr().String()
}

// Each fault stops the deploy before cutover, with a message saying why; the live release serves on.
func TestBackupFaults(t *testing.T) {
	good := sqliteFile(t, 50)
	cases := []struct {
		name  string
		store func(t *testing.T) *config.Store
		env   map[string]string
		data  map[string][]byte
		mod   func(s *config.Service)
		want  string
	}{
		{"bucket missing", func(t *testing.T) *config.Store { s := s3Store(t); s.Bucket = "dt-no-such-bucket"; return s }, nil, nil, nil,
			`the bucket "dt-no-such-bucket" does not exist`},
		{"wrong credentials", s3Store, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, nil, nil, "the credentials were refused"},
		{"endpoint down", func(t *testing.T) *config.Store { s := s3Store(t); s.Endpoint = "http://127.0.0.1:1"; return s }, nil, nil, nil,
			"the endpoint does not answer"},
		{"upload cut off halfway", func(t *testing.T) *config.Store {
			s := s3Store(t)
			s.Endpoint = cutProxy(t, strings.TrimPrefix(os.Getenv(s3test.EnvEndpoint), "http://"), 3<<20)
			return s
		}, nil, map[string][]byte{"big.bin": randomBytes(12 << 20)}, nil, "the connection was cut during the transfer"},
		{"database fails quick_check", localStore, nil, map[string][]byte{"app.db": corrupt(sqliteFile(t, 400))}, nil, "quick_check failed, the database is damaged"},
		{"database file missing", localStore, nil, map[string][]byte{"other.db": good}, nil, "does not exist in the candidate"},
		{"seed command fails", localStore, nil, map[string][]byte{"other.db": good}, func(s *config.Service) { s.SQLite[0].SeedIfEmpty = []string{"exit", "4"} },
			"seed_if_empty: `exit 4` exited with code 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.store == nil {
				t.Skip()
			}
			r := newRig(t)
			store := c.store(t)
			if so := r.apply(r.config("v1", nil)); so.Error != "" {
				t.Fatal(so.Error)
			}
			data := map[string][]byte{"app.db": good}
			for k, v := range c.data {
				data[k] = v
			}
			if c.data != nil && c.data["other.db"] != nil {
				delete(data, "app.db")
			}
			r.putFiles(r.liveID(), "/data", data)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			so := r.apply(r.configWithStore("v2", store, c.mod))
			if so.Error == "" || !strings.Contains(so.Error, c.want) {
				t.Fatalf("error %q, want %q", so.Error, c.want)
			}
			// The store's faults are found by the preflight step, before any candidate: nothing
			// changed; the others, after the candidate: release 1 is still live.
			if !strings.Contains(so.Error, "nothing was changed") && (!strings.Contains(so.Error, "release 1 (") || !strings.Contains(so.Error, "is still live")) {
				t.Errorf("the error does not say what runs: %q", so.Error)
			}
			if got := r.get("/"); got != "version=v1" {
				t.Errorf("serving %q", got)
			}
			if got := r.state(); got != "live:1:running" {
				t.Errorf("containers: %s", got)
			}
			// No backup that looks complete.
			p := r.configWithStore("v2", store, c.mod)
			if sb, err := executor.OpenBackups(context.Background(), p, p.Service("app"), ""); err == nil {
				for k := range c.env {
					os.Unsetenv(k)
				}
				if l, err := sb.List(context.Background()); err == nil && len(l.Complete) != 0 {
					t.Errorf("a complete backup exists after the failure: %v", l.Complete[0].ID)
				}
			}
		})
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// seed_if_empty fills an empty database in a one-off container of the new image; then the
// candidate's database passes quick_check and the deploy goes on.
func TestSeedIfEmpty(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	seeded := base64.StdEncoding.EncodeToString(sqliteFile(t, 10))
	mod := func(s *config.Service) {
		s.Env["APP_SEED_DB"] = seeded
		s.SQLite[0].SeedIfEmpty = []string{"seed", "/data/app.db"}
	}
	if so := r.apply(r.configWithStore("v1", store, mod)); so.Error != "" {
		t.Fatal(so.Error)
	}
	seen := false
	for _, e := range r.events {
		seen = seen || strings.Contains(e.Detail, "testapp: seeded /data/app.db")
	}
	if !seen {
		t.Error("the seed's output is not in the events")
	}
	if _, ok := r.volumeHashes(r.liveID(), "/data")["data/app.db"]; !ok {
		t.Error("no database after seeding")
	}
}

// A backup that was tampered with, or never completed, is refused for restore.
func TestRestoreRefusesBadBackups(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	noDB := func(s *config.Service) { s.SQLite = nil }
	r.apply(r.configWithStore("v1", store, noDB))
	r.putFiles(r.liveID(), "/data", map[string][]byte{"file.txt": []byte("precious")})
	if so := r.apply(r.configWithStore("v2", store, noDB)); so.Error != "" {
		t.Fatal(so.Error)
	}
	p := r.configWithStore("v2", store, noDB)
	sb, _ := executor.OpenBackups(context.Background(), p, p.Service("app"), "")
	l, _ := sb.List(context.Background())
	m := l.Complete[0]
	archive := filepath.Join(store.Directory, backup.Dir(r.project, "app"), m.ID, m.Volumes[0].Key)
	b, _ := os.ReadFile(archive)
	b[len(b)/2] ^= 0xFF
	os.WriteFile(archive, b, 0o600)
	a := r.applier(p)
	a.SelfBinary = staticDeployer(t)
	if _, err := a.PrepareRestore(context.Background(), "app", m.ID, executor.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "does not match its manifest") {
		t.Errorf("tampered: %v", err)
	}
	os.Remove(filepath.Join(store.Directory, backup.Dir(r.project, "app"), m.ID, backup.ManifestName))
	if _, err := a.PrepareRestore(context.Background(), "app", m.ID, executor.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "is incomplete") {
		t.Errorf("incomplete: %v", err)
	}
	if got := r.volumeHashes(r.liveID(), "/data")["data/file.txt"]; got == "" {
		t.Error("the data was touched by a refused restore")
	}
}

// A local store on a full disk fails the backup before cutover.
func TestBackupDiskFull(t *testing.T) {
	r := newRig(t)
	dir := t.TempDir()
	if err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI runs as root and must be able to mount a tmpfs: %v", err)
		}
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	defer exec.Command("umount", dir).Run()
	store := &config.Store{Name: "local", Kind: "local", Directory: dir}
	noDB := func(s *config.Service) { s.SQLite = nil }
	r.apply(r.config("v1", nil))
	r.putFiles(r.liveID(), "/data", map[string][]byte{"big.bin": randomBytes(4 << 20)})
	so := r.apply(r.configWithStore("v2", store, noDB))
	if !strings.Contains(so.Error, "no space left on device") || r.get("/") != "version=v1" {
		t.Errorf("disk full: %q, serving %q", so.Error, r.get("/"))
	}
}

// An app that creates its schema at startup leaves tables without rows: that database is still
// seeded, once; a database with rows never is.
func TestSeedWhenOnlyTheSchemaExists(t *testing.T) {
	r := newRig(t)
	store := localStore(t)
	seeded := base64.StdEncoding.EncodeToString(sqliteFile(t, 10))
	mod := func(s *config.Service) {
		s.Env["APP_SEED_DB"] = seeded
		s.SQLite[0].SeedIfEmpty = []string{"seed", "/data/app.db"}
	}
	if so := r.apply(r.config("v1", nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	r.putFiles(r.liveID(), "/data", map[string][]byte{"app.db": sqliteFile(t, 0)})
	seeds := func() int {
		n := 0
		for _, e := range r.events {
			if strings.Contains(e.Detail, "is empty: seeding with") {
				n++
			}
		}
		return n
	}
	if so := r.apply(r.configWithStore("v2", store, mod)); so.Error != "" {
		t.Fatal(so.Error)
	}
	if seeds() != 1 {
		t.Errorf("the schema-only database was seeded %d times", seeds())
	}
	if so := r.apply(r.configWithStore("v3", store, mod)); so.Error != "" {
		t.Fatal(so.Error)
	}
	if seeds() != 1 {
		t.Errorf("a database with rows was seeded again (%d seeds)", seeds())
	}
}
