package executor

import (
	"context"
	"fmt"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// A destructive migration that the configuration allows (allow_destructive) runs held: the
// live release never runs on the new schema. With the proxy, new requests are held; the live
// release finishes what it has in flight and stops; a safety copy of the database's volume is
// taken on the engine; the migration runs on the live data; then the candidate starts on it,
// is checked, and the cutover sends it the held requests. If anything fails before the cutover,
// or hold_timeout passes, the safety copy is put back, the old release starts again and the
// held requests go to it. With cutover = "restart" the same runs with the service down.

// heldMargin is how much longer than hold_timeout the proxy holds requests, so that the
// deployer's put-back, not the proxy's own timeout, decides where they go.
const heldMargin = 30 * time.Second

// heldPoll is how often health checks inside a hold try (the configured interval when shorter).
const heldPoll = 20 * time.Millisecond

// hold is a held migration: a destructive change runs with the old release stopped (and new
// requests held by the proxy when it serves the service), its data copied aside first, until the
// new release takes over, or the copy is put back. When the hold began and must end by, whether
// the proxy holds requests, whether the old release is stopped, the safety copy (its volume) is
// taken.
type hold struct {
	d                    *deployment
	holdStart, holdUntil time.Time
	holding, stopped     bool
	copied               bool
	safety               string
	heldCheck            chan heldCheck // the held migration's quick_check, on the engine
}

// heldMigration stops the live release (holding its requests in proxy mode), copies the
// database's volume aside and runs the migration on the live data.
func (hd *hold) heldMigration(ctx context.Context) error {
	d := hd.d
	rn, s, m, db := d.rn, d.s, d.s.Migration, d.s.MigrationDB()
	live := d.st.Live
	// What does not need the old release stopped is done before the hold, so that the hold
	// has only what must be in it. A failure before the old release stops is undone by fail.
	if err := hd.beforeHold(ctx); err != nil {
		return err
	}
	hd.holdStart = time.Now()
	hd.holdUntil = hd.holdStart.Add(m.HoldTimeout)
	if d.how.ServedByProxy() {
		hd.holding = true
		for _, p := range s.Ports {
			resp, err := rn.proxy.ctl(ctx, proxy.Request{Op: "hold", Name: routeName(s, p), Timeout: m.HoldTimeout + heldMargin, Wait: s.Deploy.Drain})
			if err != nil {
				return fmt.Errorf("hold the requests of release %d: %w", live.Release(), err)
			}
			if resp.Cut > 0 {
				rn.warn(s.Name, "%s still in flight on release %d after drain (%s) are cut by its stop", plan.Plural(resp.Cut, "request"), live.Release(), s.Deploy.Drain)
			}
		}
	}
	if err := rn.rel.stopRelease(ctx, s, live.ID, fmt.Sprintf("release %d", live.Release())); err != nil {
		return err
	}
	hd.stopped = true
	safety, helper := hd.safety, d.mg.helper
	// The database's owner is stopped: its files (with any -wal) are copied as they are, which
	// is consistent and faster than a snapshot.
	if _, err := rn.hp.runHelper(ctx, s, "safety", helper, []VolumeMount{{Name: db.Volume, Target: "/src"}, {Name: safety, Target: "/dst"}},
		"clone-volume", "/src", "/dst"); err != nil {
		return fmt.Errorf("the safety copy of %s: %w", db.Volume, err)
	}
	hd.copied = true
	rn.crash(plan.PointHeldCopied)
	rn.log(s.Name, plan.StepMigrate, "release %d stopped%s, %s copied aside to %s", live.Release(), map[bool]string{true: " with new requests held", false: ""}[hd.holding], db.Volume, safety)
	if err := d.mg.runMigration(ctx); err != nil {
		return err
	}
	rn.crash(plan.PointHeldMigrated)
	if db.QuickCheck {
		// The quick_check of the migrated database runs on the engine while the candidate
		// starts, instead of on a copy out of the candidate after its health check: the hold is
		// shorter by the copy.
		hd.heldCheck = make(chan heldCheck, 1)
		go func() {
			rep, err := rn.hp.readSchema(context.WithoutCancel(ctx), s, helper, db.Volume, db.Path)
			hd.heldCheck <- heldCheck{rep, err}
		}()
	}
	return nil
}

// beforeHold prepares a held migration with the old release still serving: the safety copy's
// (empty) volume, the helper image, and the candidate's container, created but not started.
func (hd *hold) beforeHold(ctx context.Context) error {
	d := hd.d
	rn, s, db, live := d.rn, d.s, d.s.MigrationDB(), d.st.Live
	safety := plan.SafetyVolume(rn.Project, s)
	if err := rn.own.removeOwnVolume(ctx, safety, s.Name, plan.RoleSafety); err != nil { // one a kill left is older
		return err
	}
	if err := rn.Runtime.CreateVolume(ctx, safety, map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleSafety,
		plan.LabelRelease: fmt.Sprint(live.Release()), plan.LabelVolume: db.Volume}); err != nil {
		return fmt.Errorf("the safety copy's volume: %w", err)
	}
	hd.safety = safety
	helper, err := rn.hp.helperImage(ctx)
	if err != nil {
		return err
	}
	d.mg.helper = helper
	id, err := d.createCandidate(ctx, d.candidateSpec())
	if err != nil {
		return err
	}
	d.created = id
	return nil
}

// heldCheck is the quick_check of a held migration's database, run on the engine.
type heldCheck struct {
	rep *schemaReport
	err error
}

// awaitCheck waits for the held migration's quick_check, if one runs: nil when it passed.
func (hd *hold) awaitCheck() error {
	if hd.heldCheck == nil {
		return nil
	}
	res := <-hd.heldCheck
	hd.heldCheck = nil
	switch {
	case res.err != nil:
		return res.err
	case res.rep.Missing:
		return fmt.Errorf("the database does not exist after the migration")
	case res.rep.QuickCheck != "ok":
		return fmt.Errorf("quick_check after the migration: %s", res.rep.QuickCheck)
	}
	return nil
}

// release opens the proxy's hold (the routes' backend of the moment gets the held requests).
func (hd *hold) release(ctx context.Context) {
	d := hd.d
	if !hd.holding {
		return
	}
	hd.holding = false
	if live, err := d.rn.Runtime.Inspect(context.WithoutCancel(ctx), d.st.Live.ID); err == nil {
		d.rn.proxy.setRoutes(context.WithoutCancel(ctx), d.s, live)
	}
}

// held reports whether a held migration is under way: the old release is stopped and the data
// may be migrated.
func (hd *hold) held() bool { return hd.stopped }

// putBack undoes a held migration that failed before its cutover: the database's volume from
// the safety copy, the old release started again, the held requests sent to it.
func (hd *hold) putBack(ctx context.Context, cause error) error {
	d := hd.d
	rn, s, db, live := d.rn, d.s, d.s.MigrationDB(), d.st.Live
	ctx = context.WithoutCancel(ctx)
	hd.awaitCheck() // nothing reads the volume while it is put back
	d.dropCandidate(ctx)
	err := rn.step(s.Name, plan.StepPutBack, db.Volume, fmt.Sprintf("put %s back from the safety copy and start release %d again", db.Volume, live.Release()), func() error {
		if hd.copied {
			if err := rn.hp.putBackVolume(ctx, s, d.mg.helper, hd.safety, db.Volume); err != nil {
				return err
			}
		}
		rn.crash(plan.PointPutBackCopied)
		// As a resume does (rn.resume), the old release waits under its set-aside name until
		// it is verified: killed before that, the next plan health-checks it again instead of
		// calling it live.
		if aside := oldName(s, live.Release()); live.Name != aside {
			if err := rn.Runtime.RenameContainer(ctx, live.ID, aside); err != nil {
				return err
			}
			live.Name = aside
		}
		if err := rn.Runtime.StartContainer(ctx, live.ID); err != nil {
			return err
		}
		hd.stopped = false
		rn.crash(plan.PointPutBackStarted)
		if hd.holding {
			// Healthy first, then the held requests go to it.
			started, err := rn.Runtime.Inspect(ctx, live.ID)
			if err == nil && d.s.HealthCheck != nil && d.s.HTTPPort() != nil {
				err = d.ck.healthOf(ctx, started)
			}
			hd.release(ctx)
			if err != nil {
				return err
			}
		}
		if err := d.cut.resumed(ctx, live); err != nil {
			return err
		}
		rn.crash(plan.PointPutBackVerified)
		if err := rn.Runtime.RenameContainer(ctx, live.ID, s.ContainerName); err != nil {
			return fmt.Errorf("release %d is healthy but keeps the name %s (the next apply checks it again): %w", live.Release(), live.Name, err)
		}
		live.Name = s.ContainerName
		return nil
	})
	held := time.Since(hd.holdStart).Round(time.Millisecond)
	if err != nil {
		return fmt.Errorf("%v; putting the old data back failed too: %v. Release %d is stopped and the safety copy is kept in volume %s: copy it into %s and run `docker start %s`", cause, err, live.Release(), hd.safety, db.Volume, live.Name)
	}
	hd.dropSafety(ctx)
	return fmt.Errorf("%v; the migration was undone from the safety copy and release %d (%s) serves again after %s, on the data it had", cause, live.Release(), live.Name, held)
}

// holdEnded reports how long the hold lasted, once the new release took the requests.
func (hd *hold) holdEnded() {
	d := hd.d
	if !hd.held() {
		return
	}
	hd.stopped, hd.holding = false, false
	held := time.Since(hd.holdStart)
	d.mg.mig.HeldSeconds = held.Seconds()
	what := "the service was down"
	if d.how.ServedByProxy() {
		what = "new requests were held"
	}
	d.rn.log(d.s.Name, plan.StepCutover, "held migration: %s for %s", what, held.Round(time.Millisecond))
}

// uploadSafety backs up the safety copy, the database exactly as the migration found it, to
// the store once the hold is over (the backup before the hold was taken with the old release
// serving). A failure is a warning: the deploy is done, and that earlier backup exists.
func (hd *hold) uploadSafety(ctx context.Context) {
	d := hd.d
	rn, s, db := d.rn, d.s, d.s.MigrationDB()
	if hd.safety == "" || d.mg.mig == nil || d.mg.mig.HeldSeconds == 0 || s.Backup == nil {
		return
	}
	target := s.Volume(db.Volume).Target
	err := rn.step(s.Name, plan.StepBackup, "", fmt.Sprintf("back up the safety copy of %s, as the migration found it, to backup_store.%s", db.Volume, s.Backup.Store), func() error {
		spec := ContainerSpec{Name: rn.Project.Name + "-" + s.Name + "-safety-source", Image: d.mg.helper, Cmd: []string{"version"},
			Volumes: []VolumeMount{{Name: hd.safety, Target: target}}, NoNetwork: true,
			Labels: map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleOneOff}}
		id, err := rn.hp.oneOffContainer(ctx, spec) // never started: it only holds the mount
		if err != nil {
			return err
		}
		defer rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
		src := backupSource{id: id, release: d.st.Live.Release(), image: d.st.Live.ImageRef(), imageID: d.st.Live.ImageID,
			consistency: config.ConsistencyNone, still: true, migration: migrationRecord(d.mg.mig),
			volumes: []backup.Volume{{Name: db.Volume, Target: target, Consistency: string(config.ConsistencyNone)}}}
		_, err = rn.backups().from(ctx, s, src, fmt.Sprintf("the data release %d's held migration started from", d.r.number), s.Backup.Keep, false)
		return err
	})
	if err != nil {
		rn.warn(s.Name, "the safety copy was not backed up (%v); the backup taken before the hold holds the data as of then", err)
	}
}

// dropSafety removes the safety copy once it is not needed.
func (hd *hold) dropSafety(ctx context.Context) {
	d := hd.d
	if hd.safety == "" {
		return
	}
	if err := d.rn.Runtime.RemoveVolume(context.WithoutCancel(ctx), hd.safety); err != nil {
		d.rn.warn(d.s.Name, "the safety copy %s is left: %v", hd.safety, err)
		return
	}
	hd.safety = ""
}
