package plan

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// StepKind is what a step does. A step's name is its kind, followed for checks, hooks and
// volumes by its argument ("check.canary.home", "hook.before_cutover"): Step keeps the two
// apart (Kind, Arg), and events carry the name.
type StepKind string

// Steps of plans, in the order of the apply sequence.
const (
	StepLock      StepKind = "lock"
	StepProxy     StepKind = "proxy"           // the project's proxy: cutovers and checks on the engine's host
	StepClean     StepKind = "clean"           // remove a candidate an interrupted apply left
	StepResume    StepKind = "resume"          // start a stopped live release, and health-check it
	StepBuild     StepKind = "build"           // build.before, then an image build
	StepImage     StepKind = "image"           // use (or pull) a named image
	StepDryRun    StepKind = "migrate.dry-run" // clone the database, migrate the clone, diff the schemas
	StepTrial     StepKind = "migrate.trial"   // the new release on the migrated clone
	StepMigrate   StepKind = "migrate"         // the migration on the live data
	StepCandidate StepKind = "candidate"
	StepRunning   StepKind = "check.running"
	StepHealth    StepKind = "check.health"
	StepCanary    StepKind = "check.canary" // + "." + name
	StepSmoke     StepKind = "check.smoke"
	StepSQLite    StepKind = "check.sqlite" // + "." + name
	StepHook      StepKind = "hook"         // + "." + when
	StepBackup    StepKind = "backup"
	StepCutover   StepKind = "cutover"
	StepStart     StepKind = "start" // first release of a new service
	StepVerify    StepKind = "verify"
	StepCleanup   StepKind = "cleanup"
	StepRemove    StepKind = "remove"
	StepUnlock    StepKind = "unlock"
)

// Steps that happen inside others, or outside plans (rollback, backups, restores).
const (
	StepRollback     StepKind = "rollback" // switch back after a failed verification
	StepDrain        StepKind = "drain"    // the old release's requests in flight finish
	StepVerifyBackup StepKind = "verify-backup"
	StepCheckRoom    StepKind = "check-room" // a restore: every volume's filesystem has room for the backup
	StepStop         StepKind = "stop"
	StepRestore      StepKind = "restore"  // + "." + volume
	StepPutBack      StepKind = "put-back" // + "." + volume
)

// Kill points inside steps, where a crash leaves the engine half-way through one.
const (
	PointCutoverStopped  = "cutover.stopped"       // restart: the old release stopped
	PointCutoverRenamed  = "cutover.renamed"       // restart: the old release renamed aside
	PointCutoverCreated  = "cutover.created"       // restart: the new live container created
	PointCutoverSwitched = "cutover.switched"      // proxy: routes switched to the new release
	PointCutoverSetAside = "cutover.set-aside"     // proxy: the old release renamed aside
	PointCleanupKept     = "cleanup.kept"          // the old release copied as a previous one
	PointHeldCopied      = "migrate.held-copied"   // a held migration: the old release stopped, its data copied aside
	PointHeldMigrated    = "migrate.held-migrated" // a held migration ran on the live data
	// A held migration that failed puts the old data back (PutBackPoints); the old release
	// waits under its set-aside name until it is verified, as a resumed one does.
	PointPutBackCopied   = "migrate.put-back-copied"   // the data put back, the old release still stopped
	PointPutBackStarted  = "migrate.put-back-started"  // the old release started aside, not verified
	PointPutBackVerified = "migrate.put-back-verified" // verified, the live name not given back yet
	PointDrain           = string(StepDrain)
	// A resumed live release waits under its set-aside name until it is verified.
	PointResumeAside    = "resume.set-aside" // renamed aside, not started yet
	PointResumeStarted  = "resume.started"   // started, its verification not begun
	PointResumeVerified = "resume.verified"  // verified, the live name not given back yet
)

// ResumePoints are the kill points of a resume, in order: its step's start, and the points
// inside it and its verification.
var ResumePoints = []string{string(StepResume), PointResumeAside, PointResumeStarted, string(StepVerify), PointResumeVerified}

// PutBackPoints are the kill points inside the put-back of a held migration that failed.
var PutBackPoints = []string{PointPutBackCopied, PointPutBackStarted, PointPutBackVerified}

// ProxyUpgradePoints are the kill points of an upgrade of the proxy, which happens in the proxy
// step when the proxy runs another deployer version than this one.
var ProxyUpgradePoints = []string{"proxy.next-started", "proxy.old-stopped", "proxy.old-removed"}

// The lock's words, in a plan and in a backup's, a restore's or destroy's output.
func LockWords(project string) string {
	return fmt.Sprintf("take the deploy lock of project %q", project)
}

const UnlockWords = "release the deploy lock"

// StepName names a step of a kind for one check, hook or volume.
func StepName(kind StepKind, arg string) string {
	if arg == "" {
		return string(kind)
	}
	return string(kind) + "." + arg
}

// Step is one thing apply will do, in order.
type Step struct {
	Service string `json:"service,omitempty"`
	// Kind is what the step does, Arg the check, hook or volume it is for ("" for most); Name,
	// the two together, is what plans, events and kill points call it.
	Kind   StepKind `json:"-"`
	Arg    string   `json:"-"`
	Name   string   `json:"name"`
	Detail string   `json:"detail"`
	// ContainerID is the container a step about something left over acts on; Volume the
	// scratch volume.
	ContainerID string `json:"container_id,omitempty"`
	Volume      string `json:"volume,omitempty"`
}

// argKinds are the kinds whose steps are for one check, hook or volume.
var argKinds = []StepKind{StepCanary, StepSQLite, StepHook, StepRestore, StepPutBack}

// UnmarshalJSON reads a step of a saved plan, whose name holds its kind and argument.
func (s *Step) UnmarshalJSON(b []byte) error {
	type plain Step
	if err := json.Unmarshal(b, (*plain)(s)); err != nil {
		return err
	}
	s.Kind, s.Arg = StepKind(s.Name), ""
	for _, k := range argKinds {
		if arg, ok := strings.CutPrefix(s.Name, string(k)+"."); ok {
			s.Kind, s.Arg = k, arg
		}
	}
	return nil
}

// Leftover reports whether the step deals with something an interrupted apply left, before the
// service's change.
func (s *Step) Leftover() bool { return s.ContainerID != "" || s.Volume != "" }

// steps builds step lists.
type steps []*Step

func (l *steps) add(service string, kind StepKind, arg, detail string, args ...any) *Step {
	st := &Step{Service: service, Kind: kind, Arg: arg, Name: StepName(kind, arg), Detail: fmt.Sprintf(detail, args...)}
	*l = append(*l, st)
	return st
}

// Sequencer writes the one description of what apply does, in order: the plan renders its
// steps, and apply runs them by their names. A rollback is written by it too.
type Sequencer struct {
	Project  *config.Project
	Local    bool // the engine is on this machine
	Redactor *Redactor
}

func (sq *Sequencer) cutover(s *config.Service) CutoverPlan { return PlanCutover(s, sq.Local, false) }

// plan orders everything apply will do: the lock, the proxy when one is needed, each service's
// sequence (what an interrupted apply left of it first), the removals, the unlock.
func (sq *Sequencer) plan(plan *Plan, obs *Observed) []*Step {
	if !plan.HasChanges() && len(plan.Leftovers) == 0 {
		return []*Step{}
	}
	var out steps
	out.add("", StepLock, "", "%s", LockWords(sq.Project.Name))
	if detail := preflightDetail(sq.Project, plan, sq.Local); detail != "" {
		out.add("", StepPreflight, "", "%s", detail)
	}
	if why := sq.proxyFor(plan, obs); why != "" {
		out.add("", StepProxy, "", "make sure %s runs this deployer and is ready to %s", ProxyName(sq.Project.Name), why)
	}
	for _, ch := range plan.Changes {
		st := obs.Services[ch.Service]
		if st == nil {
			st = &ServiceState{Name: ch.Service}
		}
		if ch.Action == ActionDelete {
			out.add(ch.Service, StepRemove, "", "stop and remove %s of service %q (its volumes are kept)", Plural(len(ch.RemoveIDs), "container"), ch.Service)
			continue
		}
		s := sq.Project.Service(ch.Service)
		sq.leftovers(&out, s, ch, st, obs.Routed[s.Name])
		for _, v := range obs.Safety { // after the candidate that may mount the volume
			if v.Labels[engine.LabelService] != s.Name {
				continue
			}
			if l := st.Live; l != nil && !l.Running() && strconv.Itoa(l.Release()) == v.Labels[engine.LabelRelease] {
				out.add(s.Name, StepPutBack, "", "put volume %s back from the safety copy %s: an interrupted held migration stopped release %d and may have migrated it", v.Labels[LabelVolume], v.Name, l.Release()).Volume = v.Name
			} else if l != nil && strconv.Itoa(l.Release()) == v.Labels[engine.LabelRelease] {
				out.add(s.Name, StepClean, "", "remove the safety copy %s: release %d runs again on the data put back from it", v.Name, l.Release()).Volume = v.Name
			} else {
				out.add(s.Name, StepClean, "", "remove the safety copy %s of a held migration that went through", v.Name).Volume = v.Name
			}
		}
		for _, v := range obs.ScratchOf(s.Name) { // after the helper that may still mount it
			out.add(s.Name, StepClean, "", "remove the scratch volume %s an interrupted backup or migration dry-run left", v).Volume = v
		}
		switch ch.Action {
		case ActionUpdate:
			if ch.Unverified {
				out.add(s.Name, StepResume, "", "health-check the live release %d again (an interrupted apply started it), then give it the name %s back", ch.LiveRelease, ch.Container)
			} else {
				out.add(s.Name, StepResume, "", "start the stopped live release %d (%s), then health-check it", ch.LiveRelease, ch.Container)
			}
		case ActionCreate, ActionReplace, ActionTakeover:
			sq.deploy(&out, s, ch, st)
		}
	}
	out.add("", StepUnlock, "", "%s", UnlockWords)
	return out
}

// proxyFor says what the proxy must be ready for, "" when the apply does without it: routing
// to live releases when a service uses the proxy cutover and something runs (a proxy killed
// since is started again, with its routes), and the health checks of every deploy on a remote
// engine.
func (sq *Sequencer) proxyFor(plan *Plan, obs *Observed) string {
	why := ""
	for _, l := range plan.Leftovers {
		if l.Kind == LeftoverProxy || l.Kind == LeftoverProxyUpgrade {
			why = "route to the live releases"
		}
	}
	if obs.Proxy != nil || obs.hasLive() {
		for _, s := range sq.Project.Services {
			if sq.cutover(s).ServedByProxy() {
				why = "route to the live releases"
			}
		}
	}
	for _, ch := range plan.Changes {
		s := sq.Project.Service(ch.Service)
		if ch.PortHandover == HandoverFromProxy && why == "" {
			why = "route to the live releases" // until it gives their ports back
		}
		if s == nil || ch.Action == ActionNone || ch.Action == ActionDelete || !sq.cutover(s).NeedsProxy() {
			continue
		}
		switch {
		case sq.Local:
			why = "route to the live releases"
		case sq.cutover(s).ServedByProxy():
			why = "route to the live releases and run the health checks"
		case why == "":
			why = "run the health checks from the engine's host"
		}
	}
	return why
}

// leftovers are the steps that deal with what an interrupted apply left of a service, before
// its change: candidates go, releases set aside become previous ones.
func (sq *Sequencer) leftovers(out *steps, s *config.Service, ch *Change, st *ServiceState, routed *engine.Container) {
	for _, c := range st.Candidates {
		if l := st.Live; routed == c && l != nil && l.Running() {
			out.add(s.Name, StepClean, "", "let the leftover candidate %s (release %d), which an interrupted cutover left serving, finish its requests in flight (up to %s) once the proxy routes to release %d again, then remove it", c.Name, c.Release(), Dur(s.Deploy.Drain), l.Release()).ContainerID = c.ID
			continue
		}
		out.add(s.Name, StepClean, "", "remove the leftover candidate %s (release %d, %s)", c.Name, c.Release(), c.State).ContainerID = c.ID
	}
	if t := ch.Takeover; t != nil && t.SetAside && t.Kept {
		out.add(s.Name, StepCleanup, "", "remove %s: it is kept as release %d already", t.Name, t.Release).ContainerID = t.ID
	} else if t != nil && t.SetAside {
		out.add(s.Name, StepCleanup, "", "keep %s (taken over: %s) as release %d, with the deployer's labels", t.Name, t.Made, t.Release).ContainerID = t.ID
	}
	for _, c := range st.Others {
		if c.Running() && sq.cutover(s).ServedByProxy() {
			out.add(s.Name, StepCleanup, "", "let the container %s (role %q, release %d, running) finish its requests in flight (up to %s), then keep it as a previous release", c.Name, c.Role(), c.Release(), Dur(s.Deploy.Drain)).ContainerID = c.ID
			continue
		}
		out.add(s.Name, StepCleanup, "", "keep the container %s (role %q, release %d) as a previous release", c.Name, c.Role(), c.Release()).ContainerID = c.ID
	}
}

// deploy is the blue-green sequence of the design: image, candidate, checks, backup, cutover,
// verify, clean-up; a live release that is stopped is started first.
func (sq *Sequencer) deploy(out *steps, s *config.Service, ch *Change, st *ServiceState) {
	cut := sq.cutover(s)
	if t := ch.Takeover; ch.Action == ActionTakeover && t.State != "running" {
		out.add(s.Name, StepResume, "", "start the stopped container %s, then health-check it", t.Name)
	} else if st.Live != nil && !st.Live.Running() && ch.Action == ActionReplace {
		out.add(s.Name, StepResume, "", "start the stopped live release %d (%s), then health-check it", st.Live.Release(), st.Live.Name)
	} else if st.Live != nil && st.Live.Name != s.ContainerName && ch.Action == ActionReplace {
		// Started by an apply killed before it verified it (a resume, a put-back): checked
		// before anything counts on it.
		out.add(s.Name, StepResume, "", "health-check the live release %d again (an interrupted apply started it), then give it the name %s back", st.Live.Release(), s.ContainerName)
	}
	switch {
	case s.Build != nil && ch.ImageID == "":
		before := ""
		if len(s.Build.Before) > 0 {
			before = fmt.Sprintf("run `%s`, then ", sq.Redactor.Command(s.Name, config.AttrBuildBefore, s.Build.Before))
		}
		out.add(s.Name, StepBuild, "", "%sbuild %s from %s (%s)", before, s.Image, s.Build.Context, s.Build.Dockerfile)
	case ch.ImageID == "":
		out.add(s.Name, StepImage, "", "pull %s", s.Image)
	default:
		out.add(s.Name, StepImage, "", "use %s (%s)", s.Image, Short(ch.ImageID))
	}
	replacing := ch.Action == ActionReplace || ch.Action == ActionTakeover
	if s.Migration != nil {
		// The migration's data must be in the backup, and the candidate runs on the migrated
		// live data: dry-run, trial, backup and migration come before the candidate.
		sq.migration(out, s, ch, st, replacing)
	}
	out.add(s.Name, StepCandidate, "", "create and start %s%s (release %d)%s", s.ContainerName, CandidateSuffix, ch.NextRelease, cut.candidateWhere())
	sq.checks(out, s, true)
	if s.Migration == nil {
		sq.backup(out, s, ch, replacing)
	}
	sq.switchOver(out, s, ch, cut)
	keep := ""
	if ch.Action == ActionTakeover {
		keep = fmt.Sprintf("; keep %s as release %d, with the deployer's labels, for rollback", ch.Takeover.Name, ch.LiveRelease)
	}
	out.add(s.Name, StepCleanup, "", "remove the candidate, keep %s%s%s", Plural(s.Deploy.KeepReleases, "previous release"), keep, pruneText(ch.Prune))
}

// migration is a migration's steps: the dry-run on a clone and the trial of the new release on
// it, then (after the backup) the run on the live data.
func (sq *Sequencer) migration(out *steps, s *config.Service, ch *Change, st *ServiceState, replacing bool) {
	m, db := s.Migration, s.MigrationDB()
	cmd := sq.Redactor.Command(s.Name, config.AttrMigrationCommand, m.Command)
	gate := "; a destructive change stops the deploy here"
	if m.AllowDestructive {
		gate = "; a destructive change runs held (allow_destructive): the live release stopped, " + sq.cutover(s).HoldText() + ", until the new release takes over"
	}
	if !replacing {
		gate = ""
	}
	if len(st.Migrated) > 0 {
		gate += fmt.Sprintf("; an interrupted apply ran a migration of release %d on the live data: if it is this one with this image, it is not run again", st.Migrated[0].Release())
	}
	if m.DryRun {
		out.add(s.Name, StepDryRun, "", "clone volume %s, run `%s` on the clone (deadline %s), quick_check and diff the schema of sqlite %s%s", db.Volume, cmd, Dur(m.Deadline), db.Name, gate)
		out.add(s.Name, StepTrial, "", "start release %d on the migrated clone and check it; remove it and the clone", ch.NextRelease)
	} else if replacing {
		out.add(s.Name, StepDryRun, "", "dry_run = false: the change is unknown, so it counts as destructive%s", gate)
	}
	sq.backup(out, s, ch, replacing)
	serving := ""
	if replacing {
		serving = fmt.Sprintf(" (release %d keeps serving: the change is additive)", ch.LiveRelease)
	}
	out.add(s.Name, StepMigrate, "", "run `%s` on the live data of sqlite %s (deadline %s)%s", cmd, db.Name, Dur(m.Deadline), serving)
}

// backup is the backup of the live release before the cutover (before the migration, when
// there is one).
func (sq *Sequencer) backup(out *steps, s *config.Service, ch *Change, replacing bool) {
	if b := s.Backup; b != nil && replacing {
		extra := BackupHow(s)
		if b.Logs {
			extra += ", with its logs"
		}
		of := fmt.Sprintf("release %d", ch.LiveRelease)
		if ch.Action == ActionTakeover {
			of = "the container " + ch.Takeover.Name
		}
		out.add(s.Name, StepBackup, "", "back up %s of %s to backup_store.%s%s; keep %d", strings.Join(b.Volumes, ", "), of, b.Store, extra, b.Keep)
	}
}

// Rollback is the sequence that brings an earlier release back: the same candidate, checks
// (not the hooks and SQLite checks, which ran when it was new), cutover and verification as a
// deploy.
func (sq *Sequencer) Rollback(s *config.Service, ch *Change, live *engine.Container) []*Step {
	var out steps
	if !live.Running() {
		out.add(s.Name, StepResume, "", "start the stopped live release %d (%s), then health-check it", live.Release(), live.Name)
	}
	out.add(s.Name, StepCandidate, "", "create and start %s%s (release %d)%s", s.ContainerName, CandidateSuffix, ch.NextRelease, sq.cutover(s).candidateWhere())
	sq.checks(&out, s, false)
	sq.switchOver(&out, s, ch, sq.cutover(s))
	out.add(s.Name, StepCleanup, "", "keep release %d as a previous release, remove the stopped copy of release %d", ch.LiveRelease, ch.NextRelease)
	return out
}

// checks are the candidate's checks; the SQLite checks and hooks only for a new release.
func (sq *Sequencer) checks(out *steps, s *config.Service, newRelease bool) {
	out.add(s.Name, StepRunning, "", "the candidate keeps running")
	if h := s.HealthCheck; h != nil && s.HTTPPort() != nil {
		out.add(s.Name, StepHealth, "", "GET %s until %d consecutive %s, every %s, within %s", h.Path, h.Healthy, statusText(h.Status), Dur(h.Interval), Dur(h.Deadline))
	}
	for _, c := range s.Canaries {
		body := ""
		if c.BodyContains != "" {
			body = fmt.Sprintf(" with a body containing %q", c.BodyContains)
		}
		out.add(s.Name, StepCanary, c.Name, "GET %s answers %s%s", c.Path, statusText(c.Status), body)
	}
	if sm := s.Smoke; sm != nil && newRelease && s.HTTPPort() != nil {
		out.add(s.Name, StepSmoke, "", "%s", smokeText(sm))
	}
	if !newRelease {
		return
	}
	for _, db := range s.SQLite {
		what := ""
		if len(db.SeedIfEmpty) > 0 {
			what = fmt.Sprintf("seed with `%s` if empty, then ", sq.Redactor.Command(s.Name, config.SQLiteAttr(db.Name, config.SQLiteSeedIfEmpty), db.SeedIfEmpty))
		}
		if db.QuickCheck {
			what += "PRAGMA quick_check"
		} else {
			what = strings.TrimSuffix(what, ", then ")
		}
		out.add(s.Name, StepSQLite, db.Name, "%s/%s: %s", db.Volume, db.Path, what)
	}
	for _, h := range s.Hooks {
		out.add(s.Name, StepHook, h.When, "run `%s` in a one-off container of the new image", sq.Redactor.Command(s.Name, config.HookAttr(h.When, config.HookCommand), h.Command))
	}
}

// switchOver is the cutover (the start, for a service's first release) and its verification.
func (sq *Sequencer) switchOver(out *steps, s *config.Service, ch *Change, cut CutoverPlan) {
	kind := StepKind(StepCutover)
	if ch.Action == ActionCreate {
		kind = StepStart
	}
	out.add(s.Name, kind, "", "%s", cut.switchText(ch))
	verify := "health-check the new live release through " + hostPortList(s)
	if ch.Action != ActionCreate && s.Deploy.AutoRollback {
		verify += fmt.Sprintf("; on failure roll back to release %d", ch.LiveRelease)
	}
	out.add(s.Name, StepVerify, "", "%s", verify)
}

// KillPoints lists, in order and once each, every point of a plan where a crash test can stop
// apply: each step's start, and the points inside its cutover and clean-up. The points of an
// upgrade of the proxy are ProxyUpgradePoints.
func KillPoints(p *config.Project, plan *Plan) []string {
	local := LocalEngine(plan.Engine)
	seen := map[string]bool{}
	var out []string
	add := func(points ...string) {
		for _, pt := range points {
			if !seen[pt] {
				seen[pt] = true
				out = append(out, pt)
			}
		}
	}
	for _, st := range plan.Steps {
		add(st.Name)
		s, ch := p.Service(st.Service), plan.Change(st.Service)
		if s == nil || ch == nil {
			continue
		}
		cut := PlanCutover(s, local, false)
		switch k := st.Kind; {
		case k == StepResume:
			add(ResumePoints...)
		case k == StepCutover || k == StepStart:
			add(cut.points(ch)...)
		case k == StepCleanup && st.Leftover() && !(ch.Takeover != nil && ch.Takeover.Kept && st.ContainerID == ch.Takeover.ID):
			add(PointCleanupKept)
		case k == StepCleanup && !st.Leftover() && ch.Action != ActionCreate:
			add(cut.retirePoints()...)
			add(PointCleanupKept)
		}
	}
	return out
}

// BackupHow says how a backup reads the volumes: the databases snapshotted online, the volumes
// whose other files are read with the live release paused.
func BackupHow(s *config.Service) string {
	b := s.Backup
	var dbs, paused []string
	for _, v := range b.Volumes {
		hasDB := false
		for _, db := range s.SQLite {
			if db.Volume == v {
				dbs = append(dbs, "sqlite "+db.Name)
				hasDB = true
			}
		}
		if b.ConsistencyOf(v) == config.ConsistencyPause {
			if hasDB {
				paused = append(paused, "any other files of "+v)
			} else {
				paused = append(paused, "the files of "+v)
			}
		}
	}
	var parts []string
	if len(dbs) > 0 {
		parts = append(parts, strings.Join(dbs, ", ")+" snapshotted online")
	}
	if len(paused) > 0 {
		parts = append(parts, "the live release paused while "+strings.Join(paused, ", ")+" are read")
	} else {
		parts = append(parts, "the live release never paused")
	}
	return ": " + strings.Join(parts, ", ")
}
