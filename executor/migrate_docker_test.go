package executor_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor"
	"github.com/deployer-dev/deployer/executor/plan"
)

// schemaState is what the live app sees of its database: the rows table's columns and
// indexes, its row count and highest row number (equal unless a row was lost or added).
type schemaState struct {
	Columns   []string `json:"columns"`
	Indexes   []string `json:"indexes"`
	Count     int64    `json:"count"`
	Max       int64    `json:"max"`
	Committed int64    `json:"committed"`
	Error     string   `json:"error"`
}

func (r *rig) schema() schemaState {
	r.t.Helper()
	var s schemaState
	body := r.get("/writer?schema=1")
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		r.t.Fatalf("GET /writer?schema=1: %q", body)
	}
	if s.Error != "" {
		r.t.Fatalf("the live app's writer failed: %s", s.Error)
	}
	return s
}

// migrationRig deploys release 1 of a writer app (its database app.db in the data volume,
// backed up to a local store) and waits for rows; mig, when given, configures release 2's
// migration.
type migrationRig struct {
	*rig
	store *config.Store
}

func newMigrationRig(t *testing.T, cutover config.Cutover) *migrationRig {
	r := &migrationRig{rig: newRig(t), store: localStore(t)}
	r.self = staticDeployer(t)
	if so := r.apply(r.project2("v1", cutover, nil)); so.Error != "" {
		t.Fatal(so.Error)
	}
	for r.writer("").Committed < 50 {
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

func (r *migrationRig) project2(v string, cutover config.Cutover, mod func(s *config.Service)) *config.Project {
	return r.configWithStore(v, r.store, func(s *config.Service) {
		s.Env["APP_WRITER_DB"] = "/data/app.db"
		s.Env["APP_WRITER_EVERY"] = "10ms"
		s.Deploy.Cutover = cutover
		if mod != nil {
			mod(s)
		}
	})
}

// migration is a migration block running the test app's command.
func migration(cmd ...string) func(s *config.Service) {
	return func(s *config.Service) {
		s.Migration = config.NewMigration()
		s.Migration.Command = cmd // the image's entrypoint is /bin/app
		s.Migration.SQLite = "main"
	}
}

// Additive migrations run on the live data while the live release goes on writing: the new
// release runs on the new schema, the diff is in the outcome, the events, the manifest of the
// backup taken before it and on the release, and no row is lost or added. With both cutovers.
func TestMigrationAdditive(t *testing.T) {
	for _, tc := range []struct {
		name, sql string
		cutover   config.Cutover
		want      string
		check     func(s schemaState) bool
	}{
		{"add-column/proxy", "ALTER TABLE rows ADD COLUMN note TEXT", config.CutoverProxy, "+ column rows.note TEXT",
			func(s schemaState) bool { return slices.Contains(s.Columns, "note") }},
		{"add-index/restart", "CREATE INDEX rows_at ON rows(at)", config.CutoverRestart, "+ index rows_at CREATE INDEX rows_at ON rows(at)",
			func(s schemaState) bool { return slices.Contains(s.Indexes, "rows_at") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMigrationRig(t, tc.cutover)
			before := r.schema()
			sink, got := noticeSink(t)
			p := r.project2("v2", tc.cutover, func(s *config.Service) {
				migration("sql", "/data/app.db", tc.sql)(s)
				s.Smoke = config.NewSmoke()
				s.Smoke.Requests, s.Smoke.P95 = 100, 2*time.Second
			})
			p.Notifies = []*config.Notify{{Kind: "webhook", Name: "ops", URL: sink, On: []string{"succeeded"}}}
			so := r.apply(p)
			if so.Error != "" {
				t.Fatal(so.Error)
			}
			if so.Release != 2 || !strings.Contains(r.get("/"), "version=v2") {
				t.Fatalf("release %d live, / answers %q", so.Release, r.get("/"))
			}
			after := r.schema()
			if !tc.check(after) {
				t.Errorf("the live database was not migrated: %+v", after)
			}
			if after.Count != after.Max || after.Max < before.Max {
				t.Errorf("rows lost or added: count %d, highest %d, before the deploy %d", after.Count, after.Max, before.Max)
			}
			// The writer went on through the deploy (blue, then green).
			time.Sleep(100 * time.Millisecond)
			if w := r.writer(""); w.Committed <= before.Committed {
				t.Errorf("the writer stopped at %d", w.Committed)
			}
			if so.Migration == nil || !slices.Contains(so.Migration.Lines(), tc.want) || so.Migration.Destructive {
				t.Fatalf("the outcome's migration: %+v", so.Migration)
			}
			if so.Smoke == nil || so.Smoke.Requests != 100 || so.Smoke.Failed != 0 {
				t.Errorf("smoke figures: %+v", so.Smoke)
			}
			var sawDiff, sawSmoke bool
			for _, e := range r.events {
				sawDiff = sawDiff || e.Type == executor.EventMigration && e.Migration != nil && slices.Contains(e.Migration.Lines(), tc.want)
				sawSmoke = sawSmoke || e.Type == executor.EventSmoke && e.Smoke != nil
			}
			if !sawDiff || !sawSmoke {
				t.Errorf("events: migration diff %v, smoke figures %v", sawDiff, sawSmoke)
			}
			if notices := got(); len(notices) != 1 || !slices.Contains(notices[0].Migration, tc.want) || !strings.Contains(notices[0].Smoke, "100 requests") {
				t.Errorf("the succeeded notice lacks the diff or the smoke figures: %+v", notices)
			}
			sb := r.serviceBackups(r.store, nil, "")
			l, err := sb.List(context.Background())
			if err != nil || len(l.Complete) != 1 {
				t.Fatalf("backups: %+v %v", l, err)
			}
			if m := l.Complete[0].Migration; m == nil || !slices.Contains(m.Changes, tc.want) || !strings.Contains(m.Output, "testapp: ran") {
				t.Errorf("the backup's manifest does not keep the migration: %+v", m)
			}
			obs, err := plan.Observe(context.Background(), r.eng, projectOnly(r.project))
			if err != nil {
				t.Fatal(err)
			}
			rels := executor.Releases(obs, "app")
			found := false
			for _, rel := range rels {
				if rel.Release == 2 && rel.Migration != nil && slices.Contains(rel.Migration.Changes, tc.want) && strings.Contains(rel.Migration.LiveOutput, "testapp: ran") {
					found = true
				}
			}
			if !found {
				t.Errorf("releases do not show release 2's migration: %+v", rels)
			}
			r.noScratchLeft()
			// Applied again: nothing to do.
			pl, err := executor.MakePlan(context.Background(), p, r.eng, plan.PlanOptions{})
			if err != nil || pl.HasChanges() {
				t.Errorf("the plan after the deploy has changes (%v): %+v", err, pl.Changes)
			}
		})
	}
}

// Every refused or failed migration stops the deploy before the live data is touched: release
// 1 serves, its database holds the same schema and every row it wrote, and nothing is left.
func TestMigrationFaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(s *config.Service)
		want string
	}{
		{"destructive", migration("sql", "/data/app.db", "ALTER TABLE rows DROP COLUMN at"), "- column rows.at"},
		{"exits-non-zero", migration("sql-fail", "/data/app.db", "CREATE TABLE half (x)"), "exited with code 1 on the copy"},
		{"hangs", func(s *config.Service) {
			migration("hang")(s)
			s.Migration.Deadline = 2 * time.Second
		}, "did not finish within 2s"},
		{"corrupts", migration("corrupt", "/data/app.db"), "the migrated copy fails quick_check"},
		{"no-dry-run", func(s *config.Service) {
			migration("sql", "/data/app.db", "ALTER TABLE rows ADD COLUMN note TEXT")(s)
			s.Migration.DryRun = false
		}, "dry_run = false"},
		{"new-release-fails-on-the-copy", func(s *config.Service) {
			migration("sql", "/data/app.db", "ALTER TABLE rows ADD COLUMN note TEXT")(s)
			s.Env["APP_MODE"] = "unhealthy"
		}, "on the migrated copy"},
		{"smoke-errors", func(s *config.Service) {
			s.Smoke = config.NewSmoke()
			s.Smoke.Paths, s.Smoke.Requests, s.Smoke.MaxErrorRate = []string{"/", "/status?code=503"}, 40, 0.1
		}, "20 of 40 requests failed"},
		{"smoke-latency", func(s *config.Service) {
			s.Smoke = config.NewSmoke()
			s.Smoke.Paths, s.Smoke.Requests, s.Smoke.P95 = []string{"/?sleep_ms=80"}, 20, 20*time.Millisecond
		}, "p95 latency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMigrationRig(t, config.CutoverProxy)
			before := r.schema()
			so := r.apply(r.project2("v2", config.CutoverProxy, tc.mod))
			if so.Error == "" || !strings.Contains(so.Error, tc.want) || !strings.Contains(so.Error, "release 1") {
				t.Fatalf("the deploy's error does not say %q and what serves: %q", tc.want, so.Error)
			}
			t.Logf("error: %s", so.Error)
			if got := r.get("/"); !strings.Contains(got, "version=v1") {
				t.Errorf("/ answers %q, want release 1", got)
			}
			after := r.schema()
			if !slices.Equal(after.Columns, before.Columns) || !slices.Equal(after.Indexes, before.Indexes) {
				t.Errorf("the live schema changed: %+v -> %+v", before, after)
			}
			if after.Count != after.Max || after.Max < before.Max {
				t.Errorf("rows lost or added: count %d, highest %d, before the deploy %d", after.Count, after.Max, before.Max)
			}
			if st := r.state(); strings.Contains(st, "candidate") || strings.Contains(st, "oneoff") {
				t.Errorf("left behind: %s", st)
			}
			r.noScratchLeft()
		})
	}
}

// noScratchLeft fails when a scratch volume of the project is left.
func (r *rig) noScratchLeft() {
	r.t.Helper()
	vols, err := r.eng.Volumes(context.Background(), r.project)
	if err != nil {
		r.t.Fatal(err)
	}
	for _, v := range vols {
		if v.Labels[plan.LabelRole] == plan.RoleScratch {
			r.t.Errorf("scratch volume %s is left", v.Name)
		}
	}
}

// typeChange turns rows.at from TEXT to BLOB: destructive (the old release's reads of it may
// break), though the test app's writer goes on inserting.
const typeChange = "CREATE TABLE rows2 (n INTEGER PRIMARY KEY, at BLOB); INSERT INTO rows2 SELECT n, at FROM rows; DROP TABLE rows; ALTER TABLE rows2 RENAME TO rows"

// load sends GETs to the host port from 8 clients until stop is called, and returns how many
// were sent, how many failed and the longest answer (a held request waits for the hold).
func (r *rig) load() (stop func() (sent, failed int, longest time.Duration)) { return r.loadAt(8) }

// loadAt is load from n clients, each sending a request every 20 ms (50/s each at most).
func (r *rig) loadAt(clients int) (stop func() (sent, failed int, longest time.Duration)) {
	t := &tally{url: fmt.Sprintf("http://127.0.0.1:%d/", r.port), c: &http.Client{Timeout: 60 * time.Second}}
	for range clients {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			for n := 0; n < 20000; n++ { // bounded, whatever happens
				select {
				case <-t.done():
					return
				case <-time.After(20 * time.Millisecond):
				}
				t.get()
			}
		}()
	}
	return t.stop
}

// loadRate sends GET / at a fixed rate, open loop: a request starts every 1/perSecond whatever
// the others do, so that a hold piles requests up as real traffic would (at most 4096 in all).
func (r *rig) loadRate(perSecond int) (stop func() (sent, failed int, longest time.Duration)) {
	t := &tally{url: fmt.Sprintf("http://127.0.0.1:%d/", r.port),
		c: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}}
	t.openLoop(perSecond, 4096)
	return t.stop
}

// openLoop starts a request every 1/perSecond, whatever the others do, until the tally is
// stopped or limit requests were started.
func (t *tally) openLoop(perSecond, limit int) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for n := 0; n < limit; n++ {
			select {
			case <-t.done():
				return
			case <-tick.C:
			}
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				t.get()
			}()
		}
	}()
}

// tally counts a load's requests: sent, failed (anything but a 200) and the longest.
type tally struct {
	url     string
	c       *http.Client
	wg      sync.WaitGroup
	once    sync.Once
	stopped chan struct{}
	mu      sync.Mutex
	sent    int
	failed  int
	longest time.Duration
}

func (t *tally) done() chan struct{} {
	t.once.Do(func() { t.stopped = make(chan struct{}) })
	return t.stopped
}

func (t *tally) get() {
	t0 := time.Now()
	resp, err := t.c.Get(t.url)
	ok := err == nil && resp.StatusCode == 200
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent++
	if !ok {
		t.failed++
	}
	t.longest = max(t.longest, time.Since(t0))
}

func (t *tally) stop() (int, int, time.Duration) {
	close(t.done())
	t.wg.Wait()
	return t.sent, t.failed, t.longest
}

// A destructive migration that the configuration allows runs held: with the proxy no request
// fails (they wait for the hold) and the old release never runs on the new schema; with the
// restart cutover the service is down meanwhile. When the new release fails in the hold, or
// the hold outlasts hold_timeout, the safety copy is put back and the old release serves again,
// on the same schema with every row.
func TestMigrationHeld(t *testing.T) {
	held := func(mod func(s *config.Service)) func(s *config.Service) {
		return func(s *config.Service) {
			migration("sql", "/data/app.db", typeChange)(s)
			s.Migration.AllowDestructive = true
			if mod != nil {
				mod(s)
			}
		}
	}
	for _, tc := range []struct {
		name    string
		cutover config.Cutover
		mod     func(s *config.Service)
		fail    string
	}{
		{"proxy", config.CutoverProxy, nil, ""},
		{"restart", config.CutoverRestart, nil, ""},
		{"new-release-fails", config.CutoverProxy, func(s *config.Service) {
			s.Migration.DryRun = false // the trial would catch it first
			s.Env["APP_MODE"] = "unhealthy"
		}, "undone from the safety copy"},
		{"hold-timeout", config.CutoverProxy, func(s *config.Service) {
			s.Migration.DryRun = false
			s.Migration.HoldTimeout = 2 * time.Second
			s.Env["APP_MODE"], s.Env["APP_START_DELAY"] = "slow", "6s"
		}, "outlasted hold_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newMigrationRig(t, tc.cutover)
			before := r.schema()
			stop := r.load()
			so := r.apply(r.project2("v2", tc.cutover, held(tc.mod)))
			sent, failed, longest := stop()
			t.Logf("%d requests during the deploy, %d failed, the longest took %s; error: %s", sent, failed, longest.Round(time.Millisecond), so.Error)
			after := r.schema()
			if after.Count != after.Max || after.Max < before.Max {
				t.Errorf("rows lost or added: count %d, highest %d, before the deploy %d", after.Count, after.Max, before.Max)
			}
			if tc.cutover == config.CutoverProxy && failed > 0 {
				t.Errorf("%d of %d requests failed through a held migration", failed, sent)
			}
			r.noScratchLeft()
			if tc.fail == "" {
				if so.Error != "" {
					t.Fatal(so.Error)
				}
				if so.Migration == nil || so.Migration.HeldSeconds <= 0 || !strings.Contains(r.get("/"), "version=v2") {
					t.Errorf("the held migration: %+v, / answers %q", so.Migration, r.get("/"))
				}
				vols, _ := r.eng.Volumes(context.Background(), r.project)
				for _, v := range vols {
					if v.Labels[plan.LabelRole] == plan.RoleSafety {
						t.Errorf("the safety copy %s is left after a deploy that succeeded", v.Name)
					}
				}
				// The safety copy went to the store after the hold: the database as the
				// migration found it, checked, beside the backup taken before the hold.
				l, err := r.serviceBackups(r.store, nil, "").List(context.Background())
				if err != nil || len(l.Complete) != 2 {
					t.Fatalf("backups: %+v %v", l, err)
				}
				found := false
				for _, m := range l.Complete {
					if strings.Contains(m.Reason, "held migration started from") && len(m.SQLite) == 1 && m.SQLite[0].Result == "ok" && m.Migration != nil {
						found = true
					}
				}
				if !found {
					t.Errorf("no checked backup of the safety copy: %+v", l.Complete)
				}
				return
			}
			if !strings.Contains(so.Error, tc.fail) || !strings.Contains(r.get("/"), "version=v1") {
				t.Fatalf("error %q, / answers %q", so.Error, r.get("/"))
			}
			if !slices.Equal(after.Columns, before.Columns) {
				t.Errorf("the live schema changed: %v -> %v", before.Columns, after.Columns)
			}
			if w := r.writer(""); w.Committed <= before.Committed {
				t.Errorf("release 1's writer does not go on: %d", w.Committed)
			}
		})
	}
}

// padSQL grows the database by about mib MiB of incompressible rows, as an app's data would.
func padSQL(mib int) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS pad (id INTEGER PRIMARY KEY, body BLOB); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < %d) INSERT INTO pad (body) SELECT randomblob(4000) FROM c", mib*256)
}

// BenchmarkHeldMigration measures a held migration (a column's type changed on a 100 MiB
// database, the proxy holding requests) under 200 requests/s sent open loop: the requests that failed
// (goal 0), the hold's length (goal under 2 s) and the longest request.
func BenchmarkHeldMigration(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r := &migrationRig{rig: newRig(b), store: &config.Store{Name: "local", Kind: "local", Directory: b.TempDir()}}
		r.self = staticDeployer(b)
		if so := r.apply(r.project2("v1", config.CutoverProxy, nil)); so.Error != "" {
			b.Fatal(so.Error)
		}
		if so := r.apply(r.project2("v2", config.CutoverProxy, migration("sql", "/data/app.db", padSQL(100)))); so.Error != "" {
			b.Fatal(so.Error)
		}
		stop := r.loadRate(200)
		r.events = nil
		so := r.apply(r.project2("v3", config.CutoverProxy, func(s *config.Service) {
			migration("sql", "/data/app.db", typeChange)(s)
			s.Migration.AllowDestructive = true
		}))
		sent, failed, longest := stop()
		if so.Error != "" || so.Migration == nil {
			b.Fatal(so.Error)
		}
		b.Logf("%d requests, %d failed, longest %s, held %.2fs, clone %s in %.2fs", sent, failed, longest.Round(time.Millisecond), so.Migration.HeldSeconds, executor.HumanBytes(so.Migration.CloneBytes), so.Migration.CloneSeconds)
		var parts []string
		for _, e := range r.events {
			if e.Type == executor.EventStep && e.Phase == "end" {
				parts = append(parts, fmt.Sprintf("%s %.2fs", e.Step, e.Seconds))
			}
			if e.Type == executor.EventLog && strings.Contains(e.Detail, "stopped") || e.Type == executor.EventStep && e.Phase == "start" {
				parts = append(parts, fmt.Sprintf("[%s %s at %s]", e.Step, firstWords(e.Detail), e.Time.Format("15:04:05.000")))
			}
		}
		b.Logf("steps: %s", strings.Join(parts, ", "))
		b.ReportMetric(float64(failed), "failed-requests")
		b.ReportMetric(so.Migration.HeldSeconds, "hold-s")
		b.ReportMetric(longest.Seconds(), "longest-request-s")
		b.ReportMetric(float64(sent)/so.Seconds, "requests/s")
	}
}

// The dry-run's clone, schema reads and diff stream: they succeed with the helpers' memory
// capped at 48 MiB on a 256 MiB database, the live release writing meanwhile.
func TestMigrationCloneMemoryCapped(t *testing.T) {
	r := newMigrationRig(t, config.CutoverProxy)
	if so := r.apply(r.project2("v2", config.CutoverProxy, migration("sql", "/data/app.db", padSQL(256)))); so.Error != "" {
		t.Fatal(so.Error)
	}
	r.helperMemory = 48 << 20
	so := r.apply(r.project2("v3", config.CutoverProxy, migration("sql", "/data/app.db", "ALTER TABLE rows ADD COLUMN note TEXT")))
	if so.Error != "" {
		t.Fatal(so.Error)
	}
	if m := so.Migration; m == nil || m.CloneBytes < 256<<20 || !slices.Contains(m.Lines(), "+ column rows.note TEXT") {
		t.Fatalf("the capped dry-run: %+v", m)
	}
	if s := r.schema(); !slices.Contains(s.Columns, "note") || s.Count != s.Max {
		t.Errorf("after the deploy: %+v", s)
	}
}

func firstWords(s string) string {
	if len(s) > 40 {
		return s[:40]
	}
	return s
}

// BenchmarkMigrationDryRun measures plan -migrations' dry-run (clone the database's volume on
// the engine, migrate the clone, quick_check and diff) on a 100 MiB and a 1 GiB database while
// the live release writes, beside the engine's plain copy of the same volume in the same run.
func BenchmarkMigrationDryRun(b *testing.B) {
	for _, mib := range []int{100, 1024} {
		b.Run(fmt.Sprintf("size=%dMiB", mib), func(b *testing.B) {
			r := &migrationRig{rig: newRig(b), store: &config.Store{Name: "local", Kind: "local", Directory: b.TempDir()}}
			r.self = staticDeployer(b)
			if so := r.apply(r.project2("v1", config.CutoverProxy, nil)); so.Error != "" {
				b.Fatal(so.Error)
			}
			if so := r.apply(r.project2("v2", config.CutoverProxy, migration("sql", "/data/app.db", padSQL(mib)))); so.Error != "" {
				b.Fatal(so.Error)
			}
			p := r.project2("v3", config.CutoverProxy, migration("sql", "/data/app.db", "ALTER TABLE rows ADD COLUMN note TEXT; CREATE INDEX rows_at ON rows(at)"))
			ctx := context.Background()
			var dry, clone, plain time.Duration
			var size int64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pl, err := executor.MakePlan(ctx, p, r.eng, plan.PlanOptions{})
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				res, err := r.applier(p).DryRunMigrations(ctx, pl)
				if err != nil || len(res) != 1 || res[0].Error != "" || res[0].Report == nil || len(res[0].Report.Changes) != 2 {
					b.Fatalf("dry-run: %v %+v", err, res)
				}
				dry += time.Since(t0)
				m := res[0].Report
				clone += time.Duration(m.CloneSeconds * float64(time.Second))
				size = m.CloneBytes
				b.StopTimer()
				t0 = time.Now()
				rc, err := r.eng.CopyFrom(ctx, r.liveID(), "/data")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, rc)
				rc.Close()
				plain += time.Since(t0)
				b.Logf("clone %.2fs, migrate %.2fs, diff %.2fs of %s; plain copy %.2fs", m.CloneSeconds, m.MigrateSeconds, m.DiffSeconds, executor.HumanBytes(m.CloneBytes), time.Since(t0).Seconds())
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(size)/(1<<20), "volume-MiB")
			b.ReportMetric(dry.Seconds()/n, "dry-run-s")
			b.ReportMetric(clone.Seconds()/n, "clone-s")
			b.ReportMetric(plain.Seconds()/n, "plain-copy-s")
			r.noScratchLeft()
		})
	}
}
