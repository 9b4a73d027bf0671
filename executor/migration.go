package executor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/migrate"
	"github.com/deployer-dev/deployer/executor/plan"
)

// A service's migration runs in three steps. The dry-run clones the database's volume into a
// scratch volume (through a helper container on the engine: any size, bounded memory, the
// database from an online snapshot as backups take theirs), runs the migration there, checks
// the result and diffs its schema against the live one. The trial starts the new release on
// the migrated clone and health-checks it, so it is checked on the schema it will run on.
// Only then, after the backup, does the migration run on the live data, the live release
// serving all along: additive changes do not break it, and destructive ones are refused.

// MigrationReport is what a migration's dry-run (and then its run on the live data) found.
type MigrationReport struct {
	Service  string `json:"service"`
	Database string `json:"database"` // "manual_instance/manual_generator.db"
	Command  string `json:"command"`
	// DryRun is false when the configuration turned the dry-run off: nothing is known of the
	// change, which then counts as destructive.
	DryRun      bool             `json:"dry_run"`
	Changes     []migrate.Change `json:"changes"`
	Destructive bool             `json:"destructive"`
	// Output is what the migration printed on the clone; LiveOutput on the live data.
	Output     string `json:"output,omitempty"`
	LiveOutput string `json:"live_output,omitempty"`
	// CloneBytes is the size of the volume cloned; the seconds are the clone's, the
	// migration's on the clone, and the diff's.
	CloneBytes     int64   `json:"clone_bytes,omitempty"`
	CloneSeconds   float64 `json:"clone_seconds,omitempty"`
	MigrateSeconds float64 `json:"migrate_seconds,omitempty"`
	DiffSeconds    float64 `json:"diff_seconds,omitempty"`
	// HeldSeconds is how long a held migration held requests (proxy) or kept the service down.
	HeldSeconds float64 `json:"held_seconds,omitempty"`
	// Missing: the database did not exist before the migration (a first deploy).
	Missing bool `json:"missing,omitempty"`
	// Diff is Lines as recorded: after a kill, the interrupted apply's.
	Diff []string `json:"diff"`
}

// Lines is the diff as the output shows it, one change a line.
func (m *MigrationReport) Lines() []string {
	if !m.DryRun {
		return []string{"unknown: dry_run = false, so the change counts as destructive"}
	}
	return migrate.Text(m.Changes)
}

// recorded is the diff as recorded (Diff), else as the changes say.
func (m *MigrationReport) recorded() []string {
	if m.Diff != nil {
		return m.Diff
	}
	return m.Lines()
}

// Summary is one line: how many changes, destructive or not.
func (m *MigrationReport) Summary() string {
	switch {
	case !m.DryRun:
		return "schema change unknown (dry_run = false): counted as destructive"
	case len(m.Changes) == 0:
		return "no schema change"
	case m.Destructive:
		return plan.Plural(len(m.Changes), "schema change") + ", destructive"
	}
	return plan.Plural(len(m.Changes), "schema change") + ", all additive"
}

// maxMigrationOutput bounds the output a report keeps of each run.
const maxMigrationOutput = 4 << 10

// migrationKey names one migration of one image on one database.
func migrationKey(imageID string, m *config.Migration, db *config.SQLite) string {
	raw, _ := json.Marshal([]any{imageID, m.Command, db.Volume, db.Path})
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:12])
}

// migration is one deploy's migration of its database (Service.Migration): the dry-run on a
// clone and what it found, the trial of the new release on the clone, and the run on the live
// data after the backup. A destructive change runs held (hold, held.go).
type migration struct {
	d *deployment
	// mig is what the dry-run found; helper the helper image and scratch the clone's volume;
	// backupID the backup taken before the run on the live data.
	mig      *MigrationReport
	helper   string
	scratch  string
	backupID string
	// onlyDryRun: plan -migrations, which reports a destructive change instead of refusing it.
	onlyDryRun bool
	// migrated: an interrupted apply ran this migration on the live data already.
	migrated bool
}

// ranAlready finds the mark an interrupted apply left of this very migration having run on
// the live data: it is not run again (migrations need not be idempotent).
func (mg *migration) ranAlready() *Container {
	d := mg.d
	key := migrationKey(d.r.imageID, d.s.Migration, d.s.MigrationDB())
	for _, c := range d.st.Migrated {
		if c.Labels[plan.LabelMigrationKey] == key {
			return c
		}
	}
	return nil
}

// markMigrated records on the engine that the migration ran on the live data, until the deploy
// ends well.
func (mg *migration) markMigrated(ctx context.Context) {
	d := mg.d
	rn, s := d.rn, d.s
	image, err := rn.Runtime.EnsureLockImage(ctx)
	if err == nil {
		raw, _ := json.Marshal(migrationRecord(mg.mig))
		_, err = rn.Runtime.CreateContainer(ctx, ContainerSpec{Name: fmt.Sprintf("%s-migrated-%d", s.ContainerName, d.r.number), Image: image, NoNetwork: true,
			Labels: map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleMigrated, plan.LabelRelease: strconv.Itoa(d.r.number),
				plan.LabelMigrationKey: migrationKey(d.r.imageID, s.Migration, s.MigrationDB()), plan.LabelMigration: string(raw),
				plan.LabelCreatedAt: time.Now().UTC().Format(time.RFC3339)}})
	}
	if err != nil {
		rn.warn(s.Name, "could not record that the migration ran (%v): if this apply is interrupted, the next one runs it again", err)
	}
}

// dropMarks removes the marks of migrations once a deploy ended well: its release keeps the
// record.
func (mg *migration) dropMarks(ctx context.Context) {
	d := mg.d
	obs, err := plan.Observe(ctx, d.rn.Runtime, d.rn.Project)
	if err != nil || obs.Services[d.s.Name] == nil {
		return
	}
	for _, c := range obs.Services[d.s.Name].Migrated {
		d.rn.Runtime.RemoveContainer(ctx, c.ID)
	}
}

// dryRun is the migration's dry-run: clone, migrate the clone, check and diff. The clone stays
// for the trial (removeScratch removes it).
func (mg *migration) dryRun(ctx context.Context) error {
	d := mg.d
	rn, s, m, db := d.rn, d.s, d.s.Migration, d.s.MigrationDB()
	rep := mg.report()
	if mark := mg.ranAlready(); mark != nil {
		var rec backup.MigrationRecord
		json.Unmarshal([]byte(mark.Labels[plan.LabelMigration]), &rec)
		rep.LiveOutput, rep.Output, rep.Diff, rep.Destructive, mg.migrated = rec.LiveOutput, rec.Output, rec.Changes, false, true
		return rn.step(s.Name, plan.StepDryRun, "", "", func() error {
			return skipped(fmt.Sprintf("an interrupted apply ran `%s` on the live data at %s: it is not run again", rep.Command, mark.Labels[plan.LabelCreatedAt]))
		})
	}
	if !m.DryRun {
		rep.Destructive = true
		return mg.refuseDestructive()
	}
	err := rn.step(s.Name, plan.StepDryRun, "", "", func() error {
		if err := mg.cloneForMigration(ctx, db); err != nil {
			return err
		}
		before, err := rn.hp.readSchema(ctx, s, mg.helper, mg.scratch, db.Path)
		if err != nil {
			return err
		}
		if before.QuickCheck != "ok" && !before.Missing {
			return fmt.Errorf("the copy of the live database fails quick_check before the migration: %s", before.QuickCheck)
		}
		rep.Missing = before.Missing
		t0 := time.Now()
		spec := d.r.spec(fmt.Sprintf("%s-migration-dry-run-%d", s.ContainerName, d.r.number), plan.RoleOneOff, true)
		spec.Cmd, spec.Ports = m.Command, nil
		spec.Volumes = []VolumeMount{{Name: mg.scratch, Target: s.Volume(db.Volume).Target}} // the clone only: live data is never touched
		code, logs, err := rn.hp.helperRun(ctx, spec, m.Deadline)
		rep.MigrateSeconds = time.Since(t0).Seconds()
		rep.Output = tail(rn.red.Output(logs), maxMigrationOutput)
		if err != nil {
			return fmt.Errorf("migration `%s` on the copy: %w", rep.Command, err)
		}
		if code != 0 {
			return fmt.Errorf("migration `%s` exited with code %d on the copy; last output:\n%s", rep.Command, code, indent(lastLines(logs, logLines)))
		}
		t0 = time.Now()
		after, err := rn.hp.readSchema(ctx, s, mg.helper, mg.scratch, db.Path)
		if err != nil {
			return err
		}
		switch {
		case after.Missing:
			return fmt.Errorf("after the migration the copy has no database %s", db.Path)
		case after.QuickCheck != "ok":
			return fmt.Errorf("the migrated copy fails quick_check: %s", after.QuickCheck)
		case after.Error != "":
			return fmt.Errorf("the migrated copy's schema cannot be read: %s", after.Error)
		}
		old := before.Schema
		if old == nil {
			old = &migrate.Schema{}
		}
		rep.Changes = migrate.Diff(old, after.Schema)
		// With nothing live, nothing runs on the old schema: no change can break it.
		rep.Destructive = d.st.Live != nil && migrate.Destructive(rep.Changes)
		rep.DiffSeconds = time.Since(t0).Seconds()
		rep.Diff = rep.Lines()
		for _, l := range rep.Diff {
			rn.log(s.Name, plan.StepDryRun, "%s", l)
		}
		return nil
	})
	rn.emit(Event{Type: EventMigration, Service: s.Name, Step: string(plan.StepDryRun), Detail: rep.Summary(), Migration: rep})
	if err != nil {
		mg.removeScratch(ctx)
		return fmt.Errorf("migration dry-run: %w; %s, its data untouched", err, d.stillServing())
	}
	if mg.onlyDryRun {
		return nil
	}
	return mg.refuseDestructive()
}

// DryRunMigrations runs the migration dry-run of every service the plan deploys that has a
// migration, without deploying: the image is built or pulled, the database's volume cloned and
// migrated, the schemas diffed, and the clone removed. It runs the new image against a copy of
// production data, so it is never part of a plain plan. A service's failure is in its report's
// error; the returned error is for failures outside the services (the engine, the lock).
func (a *Applier) DryRunMigrations(ctx context.Context, pl *plan.Plan) ([]*DryRunResult, error) {
	var out []*DryRunResult
	rn := a.newRun()
	rn.planned = pl.Steps // the image's and the dry-run's steps say what the plan said of them
	obs, err := plan.Observe(ctx, a.Runtime, a.Project)
	if err != nil {
		return nil, err
	}
	locked := false
	for _, ch := range pl.Changes {
		s := a.Project.Service(ch.Service)
		if s == nil || s.Migration == nil || (ch.Action != plan.ActionCreate && ch.Action != plan.ActionReplace && ch.Action != plan.ActionTakeover) {
			continue
		}
		if !locked {
			locked = true
			unlock, err := rn.begin(ctx, true)
			if err != nil {
				return nil, err
			}
			defer unlock()
		}
		if err := rn.own.checkOwnership(ctx, []*config.Service{s}); err != nil {
			return nil, err
		}
		st := obs.Services[s.Name]
		if st == nil {
			st = &plan.ServiceState{Name: s.Name}
		}
		if ch.Action == plan.ActionTakeover {
			st = &plan.ServiceState{Name: s.Name, Live: &Container{ID: ch.Takeover.ID, Name: ch.Takeover.Name}}
		}
		so := &ServiceOutcome{Service: s.Name, Action: ch.Action}
		d := rn.deployment(s, ch, st, so, ch.Action == plan.ActionTakeover)
		d.r, d.mg.onlyDryRun = newRelease(a.Project, s, ch.NextRelease), true
		res := &DryRunResult{Service: s.Name}
		err := d.image(ctx)
		if errors.Is(err, errNothingToDeploy) {
			continue
		}
		if err == nil {
			err = d.mg.dryRun(ctx)
		}
		d.mg.removeScratch(ctx)
		res.Report = d.mg.mig
		if err != nil {
			res.Error = rn.red.Redact(err.Error())
		} else if d.mg.mig.Destructive && d.st.Live != nil {
			res.Refused = "apply would refuse it: the change breaks the live release while both run (allow_destructive = true runs it held)"
			if s.Migration.AllowDestructive {
				res.Refused = ""
				res.Held = "apply would run it held: the live release stopped, " + d.how.HoldText() + ", until the new release is checked"
			}
		}
		out = append(out, res)
	}
	return out, nil
}

// DryRunResult is one service's migration dry-run, run by plan -migrations.
type DryRunResult struct {
	Service string           `json:"service"`
	Engine  string           `json:"engine,omitempty"` // with engine blocks
	Report  *MigrationReport `json:"migration,omitempty"`
	// Refused says why apply would stop at the migration; Held how it would run one held;
	// Error why the dry-run failed.
	Refused string `json:"refused,omitempty"`
	Held    string `json:"held,omitempty"`
	Error   string `json:"error,omitempty"`
}

// report is the deploy's migration report, made on first use.
func (mg *migration) report() *MigrationReport {
	d := mg.d
	if mg.mig == nil {
		m, db := d.s.Migration, d.s.MigrationDB()
		mg.mig = &MigrationReport{Service: d.s.Name, Database: db.Volume + "/" + db.Path, Command: d.rn.red.Command(d.s.Name, config.AttrMigrationCommand, m.Command), DryRun: m.DryRun}
		d.so.Migration = mg.mig
	}
	return mg.mig
}

// refuseDestructive stops a deploy whose migration would break the live release, unless the
// configuration allows it: then it runs held.
func (mg *migration) refuseDestructive() error {
	d := mg.d
	rep, m := mg.mig, d.s.Migration
	if !rep.Destructive || d.st.Live == nil {
		return nil
	}
	if !m.AllowDestructive {
		mg.removeScratch(context.Background())
		why := "the dry-run found a change that breaks the live release:\n" + indent(strings.Join(rep.Lines(), "\n"))
		if !rep.DryRun {
			why = "dry_run = false, so nothing is known of the change and it counts as destructive"
		}
		return fmt.Errorf("migration refused: %s; make the change additive (add the new, remove the old in a later release), or set allow_destructive = true in the migration block to run it held, with the live release stopped; %s, its data untouched", why, d.stillServing())
	}
	d.rn.log(d.s.Name, plan.StepDryRun, "destructive, allowed: the migration runs held, release %d stopped from the migration until release %d takes over", d.st.Live.Release(), d.r.number)
	return nil
}

// cloneForMigration clones the database's volume into the dry-run's scratch volume.
func (mg *migration) cloneForMigration(ctx context.Context, db *config.SQLite) error {
	d := mg.d
	rn, s := d.rn, d.s
	helper, err := rn.hp.helperImage(ctx)
	if err != nil {
		return fmt.Errorf("the dry-run clones the database in a helper container: %w", err)
	}
	mg.helper = helper
	scratch := plan.MigrationScratch(rn.Project, s)
	for _, svc := range rn.Project.Services {
		if svc.Volume(scratch) != nil {
			return fmt.Errorf("service.%s mounts a volume named %s, the dry-run's scratch volume: rename that volume", svc.Name, scratch)
		}
	}
	// An earlier dry-run's clone (a kill) is not reused: it may be half-written.
	if err := rn.own.removeOwnVolume(ctx, scratch, s.Name, plan.RoleScratch); err != nil {
		return err
	}
	err = rn.Runtime.CreateVolume(ctx, scratch, map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleScratch})
	if errors.Is(err, ErrNameTaken) {
		return fmt.Errorf("a volume named %s exists and is not the deployer's: remove or rename it", scratch)
	}
	if err != nil {
		return err
	}
	mg.scratch = scratch
	t0 := time.Now()
	logs, err := rn.hp.runHelper(ctx, s, "clone", helper, []VolumeMount{{Name: db.Volume, Target: "/src"}, {Name: scratch, Target: "/dst"}},
		"clone-volume", "--missing-ok", "/src", "/dst", db.Path)
	if err != nil {
		return fmt.Errorf("clone %s: %w", db.Volume, err)
	}
	var out struct {
		Bytes int64 `json:"bytes"`
	}
	json.Unmarshal([]byte(lastJSONLine(logs)), &out)
	mg.mig.CloneBytes, mg.mig.CloneSeconds = out.Bytes, time.Since(t0).Seconds()
	rn.log(s.Name, plan.StepDryRun, "cloned %s (%s) in %.1fs", db.Volume, HumanBytes(out.Bytes), mg.mig.CloneSeconds)
	return nil
}

// removeScratch removes the dry-run's clone, once nothing mounts it.
func (mg *migration) removeScratch(ctx context.Context) {
	d := mg.d
	if mg.scratch == "" {
		return
	}
	if err := d.rn.Runtime.RemoveVolume(context.WithoutCancel(ctx), mg.scratch); err != nil {
		d.rn.warn(d.s.Name, "the migration dry-run's volume %s is left: %v; the next apply removes it", mg.scratch, err)
		return
	}
	mg.scratch = ""
}

// trial starts the new release on the migrated clone and checks it as a candidate (running,
// health check, canaries), then removes it and the clone.
func (mg *migration) trial(ctx context.Context) error {
	d := mg.d
	rn, s, db := d.rn, d.s, d.s.MigrationDB()
	defer mg.removeScratch(ctx)
	if mg.scratch == "" {
		return nil // no dry-run (dry_run = false): nothing to try on
	}
	name := s.ContainerName + plan.CandidateSuffix
	err := rn.step(s.Name, plan.StepTrial, "", "", func() error {
		spec := d.r.spec(name, plan.RoleCandidate, true)
		d.cut.candidateSpec(&spec)
		for i, v := range spec.Ports {
			spec.Ports[i] = PortBinding{Container: v.Container, HostIP: "127.0.0.1"} // a free port: the candidate's is for the candidate
		}
		vols := make([]VolumeMount, len(spec.Volumes))
		for i, v := range spec.Volumes {
			if v.Name == db.Volume {
				v.Name = mg.scratch
			}
			vols[i] = v
		}
		spec.Volumes = vols
		id, cand, err := d.startCandidate(ctx, spec)
		if id != "" {
			defer rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
		}
		if err != nil {
			return err
		}
		return d.probeRelease(ctx, cand)
	})
	if err != nil {
		return fmt.Errorf("release %d on the migrated copy: %w; %s, its data untouched", d.r.number, err, d.stillServing())
	}
	return nil
}

// probeRelease checks a started release as the candidate's checks do, without steps of their
// own: it keeps running, its health check passes, every canary passes.
func (d *deployment) probeRelease(ctx context.Context, c *ContainerState) error {
	alive := func() error { return d.rn.alive(ctx, c) }
	h, port := d.s.HealthCheck, d.s.HTTPPort()
	if h == nil || port == nil {
		return settled(ctx, alive)
	}
	if err := d.ck.healthOf(ctx, c); err != nil {
		return fmt.Errorf("health check GET %s: %w", h.Path, err)
	}
	for _, cn := range d.s.Canaries {
		if err := d.ck.canaryOf(ctx, c, cn); err != nil {
			return fmt.Errorf("canary %q GET %s: %w", cn.Name, cn.Path, err)
		}
	}
	return nil
}

// migrateLive runs the migration on the live data, after the backup: the live release keeps
// serving when the change is additive; a destructive one that is allowed runs held.
func (mg *migration) migrateLive(ctx context.Context) error {
	d := mg.d
	rn, s, m, db := d.rn, d.s, d.s.Migration, d.s.MigrationDB()
	mg.report()
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted before the migration; %s, its data untouched", d.stillServing())
	}
	serving := "nothing is live"
	if d.st.Live != nil {
		serving = fmt.Sprintf("release %d keeps serving", d.st.Live.Release())
	}
	heldRun := mg.mig.Destructive && m.AllowDestructive && d.st.Live != nil && !mg.migrated
	if heldRun {
		serving = fmt.Sprintf("held: release %d stopped, %s", d.st.Live.Release(), d.how.HoldText())
	}
	err := rn.step(s.Name, plan.StepMigrate, "", "", func() error {
		// What the dry-run decided, which the plan could not know.
		rn.log(s.Name, plan.StepMigrate, "on the live data of sqlite %s: %s", db.Name, serving)
		if mg.migrated {
			return skipped("an interrupted apply ran it on the live data already")
		}
		if heldRun {
			return d.hd.heldMigration(ctx)
		}
		return mg.runMigration(ctx)
	})
	if err != nil {
		if d.hd.held() {
			return err // fail puts the old data back
		}
		restore := ""
		if mg.backupID != "" {
			restore = fmt.Sprintf("; backup %s holds the data from before it (`deployer backups restore service.%s %s`)", mg.backupID, s.Name, mg.backupID)
		}
		return fmt.Errorf("migration on the live data failed after it passed on the copy: %w; %s, on the data as the migration left it%s", err, d.stillServing(), restore)
	}
	if !mg.migrated && !heldRun { // a kill in a hold puts the old data back: the next apply runs it again
		mg.markMigrated(context.WithoutCancel(ctx))
	}
	if raw, err := json.Marshal(migrationRecord(mg.mig)); err == nil {
		d.r.labels[plan.LabelMigration] = string(raw)
	}
	return nil
}

// runMigration runs the migration's command on the live data in a one-off container of the
// new image, with the service's env and volumes.
func (mg *migration) runMigration(ctx context.Context) error {
	d := mg.d
	logs, err := d.ck.oneOff(ctx, plan.StepMigrate, "migration", config.AttrMigrationCommand, d.s.Migration.Command, d.s.Migration.Deadline)
	mg.mig.LiveOutput = tail(d.rn.red.Output(logs), maxMigrationOutput)
	return err
}

// migrationRecord is what a backup's manifest and a release's label keep of a migration.
func migrationRecord(m *MigrationReport) *backup.MigrationRecord {
	if m == nil {
		return nil
	}
	return &backup.MigrationRecord{Database: m.Database, Command: m.Command, DryRun: m.DryRun, Changes: m.recorded(),
		Destructive: m.Destructive, Output: m.Output, LiveOutput: m.LiveOutput}
}

// tail keeps the last n bytes of s, at a line boundary when it can.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return "...\n" + s
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
