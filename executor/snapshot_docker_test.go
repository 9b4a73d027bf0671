package executor_test

import (
	"archive/tar"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

type writerState struct {
	Committed    int64  `json:"committed"`
	LongestGapMS int64  `json:"longest_gap_ms"`
	Error        string `json:"error"`
}

func (r *rig) writer(query string) writerState {
	r.t.Helper()
	var w writerState
	body := r.get("/writer" + query)
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		r.t.Fatalf("GET /writer: %q", body)
	}
	if w.Error != "" {
		r.t.Fatalf("the app's writer failed: %s", w.Error)
	}
	return w
}

// watchPaused records whether the container id is seen paused until stop is called.
func (r *rig) watchPaused(id string) (stop func() bool) {
	var seen atomic.Bool
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			obs, err := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			if err != nil {
				continue
			}
			for _, c := range obs.All {
				if c.ID == id && c.State == "paused" {
					seen.Store(true)
				}
			}
		}
	}()
	return func() bool { close(done); wg.Wait(); return seen.Load() }
}

// archiveEntries reads a volume's archive from a backup: its entries, and the database at path
// written to a file.
func archiveEntries(t *testing.T, sb *executor.ServiceBackups, m *backup.Manifest, volume, dbPath string) ([]string, string) {
	t.Helper()
	rc, err := backup.OpenVolume(context.Background(), sb.Store, m, volume, sb.Keys, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	db := ""
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, hdr.Name)
		if strings.HasSuffix(hdr.Name, "/"+dbPath) {
			db = filepath.Join(t.TempDir(), "snapshot.db")
			f, _ := os.Create(db)
			io.Copy(f, tr)
			f.Close()
		}
	}
	return names, db
}

// A writer app commits numbered rows while a deploy backs up its database: the live release is
// never paused for the database (the candidate is, for its own check, before it serves), the
// backup holds every row committed before it began and passes quick_check, its archive has no
// -wal or -shm, and the restored database opens in the app, which goes on writing. Files other
// than the database follow their volume's consistency, whether the database has a volume of its
// own or shares one with them. In WAL and in rollback-journal mode.
func TestOnlineSnapshotBackup(t *testing.T) {
	for _, tc := range []struct {
		journal, files string
		shared         bool // the database in the data volume, beside the app's other files
	}{{"wal", "none", false}, {"delete", "pause", false}, {"wal", "pause", true}, {"wal", "none", true}} {
		name := tc.journal + "/files=" + tc.files
		if tc.shared {
			name += "/shared"
		}
		t.Run(name, func(t *testing.T) {
			r := newRig(t)
			r.self = staticDeployer(t)
			store := localStore(t)
			dataVol, dbVol, dbDir := r.project+"-data", r.project+"-db", "/db"
			if tc.shared {
				dbVol, dbDir = dataVol, "/data"
			}
			mod := func(s *config.Service) {
				if !tc.shared {
					s.Volumes = append(s.Volumes, &config.Volume{Name: dbVol, Target: "/db"})
				}
				s.Env["APP_WRITER_DB"] = dbDir + "/app.db"
				s.Env["APP_WRITER_JOURNAL"] = tc.journal
				s.SQLite[0].Volume = dbVol
				s.Backup.Volumes = []string{dataVol}
				if !tc.shared {
					s.Backup.Volumes = []string{dbVol, dataVol}
				}
				s.Backup.VolumeConsistency = map[string]config.Consistency{dataVol: config.Consistency(tc.files)}
			}
			noBackup := func(s *config.Service) { mod(s); s.Backup = nil }
			p1 := r.config("v1", withBackup(store, noBackup))
			if so := r.apply(p1); so.Error != "" {
				t.Fatal(so.Error)
			}
			for r.writer("").Committed < 100 {
				time.Sleep(20 * time.Millisecond)
			}
			before := r.writer("?reset=1").Committed
			stop := r.watchPaused(r.liveID())
			p2 := r.configWithStore("v2", store, mod)
			so := r.apply(p2)
			paused := stop()
			if so.Error != "" {
				t.Fatal(so.Error)
			}
			gap := r.writer("")
			t.Logf("writer: %d rows before the deploy, longest gap between commits during it %d ms", before, gap.LongestGapMS)

			sb := r.serviceBackups(store, mod, "")
			l, err := sb.List(context.Background())
			if err != nil || len(l.Complete) != 1 {
				t.Fatalf("backups: %+v %v", l, err)
			}
			m := l.Complete[0]
			if len(m.SQLite) != 1 || m.SQLite[0].Result != "ok" {
				t.Errorf("quick_check: %+v", m.SQLite)
			}
			switch tc.files {
			case "none":
				if paused || m.PausedSeconds != 0 {
					t.Errorf("the live release was paused (seen %v, manifest %.3fs)", paused, m.PausedSeconds)
				}
			case "pause":
				if !paused || m.PausedSeconds <= 0 {
					t.Errorf("the data volume's files were not read paused (seen %v, manifest %.3fs)", paused, m.PausedSeconds)
				}
			}
			logged := strings.Join(r.eventDetails(), "\n")
			if !strings.Contains(logged, "1 database snapshotted online") {
				t.Errorf("the output does not say the database was snapshotted online:\n%s", logged)
			}
			if tc.journal == "delete" && !strings.Contains(logged, "app.db in delete journal mode: its writers waited up to") {
				t.Errorf("the output does not say how long the writers waited:\n%s", logged)
			}

			names, snap := archiveEntries(t, sb, m, dbVol, "app.db")
			if !tc.shared && (len(names) != 2 || names[0] != "db/" || names[1] != "db/app.db") {
				t.Errorf("the database volume's archive holds %q, want only db/ and db/app.db", names)
			}
			for _, n := range names {
				if strings.HasSuffix(n, "-wal") || strings.HasSuffix(n, "-shm") || strings.HasSuffix(n, "-journal") {
					t.Errorf("the archive holds %s beside the database's snapshot", n)
				}
			}
			if snap == "" {
				t.Fatal("no database in the archive")
			}
			if err := backup.QuickCheck(context.Background(), snap); err != nil {
				t.Fatal(err)
			}
			conn, _ := sql.Open("sqlite", "file:"+snap)
			var n int64
			conn.QueryRow("SELECT count(*) FROM rows WHERE n <= ?", before).Scan(&n)
			conn.Close()
			if n != before {
				t.Errorf("the backup holds %d of the %d rows committed before it began", n, before)
			}
			dataNames, _ := archiveEntries(t, sb, m, dataVol, "")
			if !strings.Contains(strings.Join(dataNames, " "), "data/history") {
				t.Errorf("the data volume's archive lacks its files: %q", dataNames)
			}

			// Restore: the app opens the restored database and goes on writing after its rows.
			a := r.applier(p2)
			rp, err := a.PrepareRestore(context.Background(), "app", m.ID, executor.RestoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.Restore(context.Background(), "app", rp); err != nil {
				t.Fatal(err)
			}
			var after writerState
			for i := 0; i < 100; i++ {
				if after = r.writer(""); after.Committed > before {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if after.Committed <= before {
				t.Errorf("after the restore the app's writer is at row %d, want past %d", after.Committed, before)
			}
		})
	}
}

// eventDetails are the details of the events the rig's applies sent.
func (r *rig) eventDetails() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		out = append(out, e.Detail)
	}
	return out
}

// A backup killed in its snapshot leaves the helper container and the scratch volume it mounts:
// the plan names both, and the next apply removes the helper, then the volume (the engine
// refuses to remove a volume in use), on the real engine.
func TestScratchLeftoverRemoved(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	p := r.config("v1", nil)
	if so := r.apply(p); so.Error != "" {
		t.Fatal(so.Error)
	}
	scratch := r.project + "-app-snapshots"
	if err := r.eng.CreateVolume(ctx, scratch, map[string]string{plan.LabelProject: r.project, plan.LabelService: "app", plan.LabelRole: plan.RoleScratch}); err != nil {
		t.Fatal(err)
	}
	helper, err := r.eng.CreateContainer(ctx, executor.ContainerSpec{Name: r.project + "-app-snapshot", Image: r.image,
		Volumes: []executor.VolumeMount{{Name: scratch, Target: "/snapshots"}}, NoNetwork: true,
		Labels: map[string]string{plan.LabelProject: r.project, plan.LabelService: "app", plan.LabelRole: plan.RoleOneOff}})
	if err != nil {
		t.Fatal(err)
	}
	pl, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, l := range pl.Leftovers {
		kinds = append(kinds, string(l.Kind))
	}
	if pl.HasChanges() || strings.Join(kinds, " ") != "candidate scratch" {
		t.Fatalf("leftovers: %+v", pl.Leftovers)
	}
	if _, err := r.applier(p).Apply(ctx, pl); err != nil {
		t.Fatal(err)
	}
	if _, err := r.eng.Inspect(ctx, helper); err == nil {
		t.Error("the helper is still there")
	}
	if vols, err := r.eng.Volumes(ctx, r.project); err != nil || len(vols) != 0 {
		for _, v := range vols {
			if v.Labels[plan.LabelRole] == plan.RoleScratch {
				t.Errorf("the scratch volume is still there: %+v %v", vols, err)
			}
		}
	}
	if got := r.get("/"); got != "version=v1" {
		t.Errorf("the live release after the clean-up: %q", got)
	}
}
