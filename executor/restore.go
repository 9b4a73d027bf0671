package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// RestoreOptions are what the operator says about a restore beyond the backup's ID.
type RestoreOptions struct {
	// Map restores a volume of the backup into a configured volume of another name (a volume
	// renamed since the backup): backup name -> configured name. Never implied.
	Map map[string]string
	// AllowUnsigned restores a backup without a signature when the store has a signing key
	// (a backup made before the key was set).
	AllowUnsigned bool
}

// RestoreVolume is one volume a restore replaces.
type RestoreVolume struct {
	From   string `json:"from"` // the volume's name in the backup
	To     string `json:"to"`   // the configured volume it replaces
	Target string `json:"target"`
	Bytes  int64  `json:"bytes"`
	// Disk is what its files take once made (4 KiB blocks, as verify counted them): the
	// volume must have room for the larger of Bytes and Disk before it is emptied.
	Disk int64 `json:"disk_bytes,omitempty"`
	// Inodes is how many files the archive makes: the volume's filesystem must have them free.
	Inodes int64 `json:"inodes,omitempty"`
}

// RestorePlan is what a restore will do, shown to the operator before it asks.
type RestorePlan struct {
	Manifest *backup.Manifest
	Store    string
	Volumes  []RestoreVolume
	// Untouched are configured backup volumes the backup does not hold (added since): they are
	// left as they are.
	Untouched   []string
	LiveRelease int    // 0 when the service has no live release
	LiveState   string // running, exited, ... ("" without a live release)
	How         string // what happens to the service, and why
	Warnings    []string
	// verified holds the backup's archives, downloaded and checked by the verify: the restore
	// reads them, never the store again. Close removes them.
	verified *backup.Verified
}

// Close removes the archives the plan's verify downloaded (a restore closes its plan itself;
// a plan never restored must be closed by its caller).
func (rp *RestorePlan) Close() error {
	if rp == nil {
		return nil
	}
	return rp.verified.Close()
}

// restorer verifies and restores a service's backups, in one run.
type restorer struct{ *run }

func (a *Applier) restorer() restorer { return restorer{a.newRun()} }

// VerifyBackup finds a backup and fully verifies it: manifest, signature, checksums, archives,
// SQLite.
func (a *Applier) VerifyBackup(ctx context.Context, service, id string) (*backup.Manifest, error) {
	rs := a.restorer()
	_, sb, m, err := rs.findBackup(ctx, service, id)
	if err != nil {
		return nil, err
	}
	v, err := rs.verifyBackup(ctx, sb, m)
	v.Close()
	return m, err
}

// verifyBackup downloads and verifies a backup, keeping its archives for a restore to read, and
// says what each volume's files take on a disk. The caller closes what it returns.
func (rs restorer) verifyBackup(ctx context.Context, sb *ServiceBackups, m *backup.Manifest) (v *backup.Verified, err error) {
	err = rs.step(sb.Expect.Service, plan.StepVerifyBackup, "", "download "+m.ID+" and check it against its manifest", func() error {
		var verr error
		v, verr = backup.Download(ctx, sb.Store, m, sb.Keys, rs.TempDir)
		return verr
	})
	return v, err
}

// findBackup opens a service's backups and finds one, checked against the configuration.
func (rs restorer) findBackup(ctx context.Context, service, id string) (*config.Service, *ServiceBackups, *backup.Manifest, error) {
	s, sb, err := rs.serviceBackups(ctx, service)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := backup.Find(ctx, sb.Store, sb.Expect, sb.Keys, id)
	return s, sb, m, err
}

func (rs restorer) serviceBackups(ctx context.Context, service string) (*config.Service, *ServiceBackups, error) {
	s := rs.Project.Service(service)
	if s == nil {
		return nil, nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	if s.Backup == nil {
		return nil, nil, fmt.Errorf("service.%s has no backup block, so it has no backups to restore", service)
	}
	sb, err := OpenBackups(ctx, rs.Project, s, rs.IdentityFile)
	return s, sb, err
}

// PrepareRestore finds and fully verifies a backup, and works out which volumes it replaces:
// only those both in the backup and in the service's backup block (or mapped onto one with
// opts.Map). A volume of the backup that the configuration does not back up is refused before
// anything is touched, so a backup can never pick which volume it fills.
func (a *Applier) PrepareRestore(ctx context.Context, service, id string, opts RestoreOptions) (*RestorePlan, error) {
	return a.restorer().prepare(ctx, service, id, opts)
}

func (rs restorer) prepare(ctx context.Context, service, id string, opts RestoreOptions) (*RestorePlan, error) {
	s, sb, m, err := rs.findBackup(ctx, service, id)
	if err != nil {
		return nil, err
	}
	rp := &RestorePlan{Manifest: m, Store: sb.Store.String()}
	if warning, err := unsignedRestore(m, s, opts.AllowUnsigned); err != nil {
		return nil, err
	} else if warning != "" {
		rp.Warnings = append(rp.Warnings, warning)
	}
	if rp.Volumes, rp.Untouched, err = restoreVolumes(s, m, opts.Map); err != nil {
		return nil, err
	}
	if rp.verified, err = rs.verifyBackup(ctx, sb, m); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			rp.Close()
		}
	}()
	for i := range rp.Volumes {
		n := rp.verified.Needs[rp.Volumes[i].From]
		rp.Volumes[i].Disk, rp.Volumes[i].Inodes = n.Bytes, n.Inodes
	}
	obs, err := plan.Observe(ctx, rs.Runtime, rs.Project)
	if err != nil {
		return nil, err
	}
	var live *Container
	if st := obs.Services[service]; st != nil {
		live = st.Live
	}
	// Said now, before the operator is asked; checked again in the lock.
	if err := rs.mayRestore(ctx, s, live, rp.Volumes); err != nil {
		return nil, err
	}
	var names []string
	for _, v := range rp.Volumes {
		names = append(names, v.To)
	}
	vols := strings.Join(names, ", ")
	switch st := obs.Services[service]; {
	case st == nil || st.Live == nil:
		rp.How = fmt.Sprintf("No release is live: the current data of %s is backed up first, then replaced; the next apply starts the service on it.", vols)
	case st.Live.Running():
		rp.LiveRelease, rp.LiveState = st.Live.Release(), st.Live.State
		rp.How = fmt.Sprintf("The current data of %s is backed up first, then the live release %d is stopped while the volumes are replaced, then started and health-checked: "+
			"the service is down meanwhile. It is stopped rather than restored through a candidate because the candidate shares the live "+
			"release's volumes, and files replaced under a running app would corrupt its data.", vols, rp.LiveRelease)
	default:
		rp.LiveRelease, rp.LiveState = st.Live.Release(), st.Live.State
		rp.How = fmt.Sprintf("The live release %d is %s: the current data of %s is backed up first, then replaced, then the release is started and health-checked.", rp.LiveRelease, st.Live.State, vols)
	}
	if len(rp.Untouched) > 0 {
		rp.How += fmt.Sprintf(" The backup does not hold %s: left as it is.", strings.Join(rp.Untouched, ", "))
	}
	ok = true
	return rp, nil
}

// unsignedRestore refuses a backup that is not signed for this store when the store has a
// signing key, unless allowed; allowed, it says so.
func unsignedRestore(m *backup.Manifest, s *config.Service, allow bool) (warning string, err error) {
	var why string
	switch m.Signed {
	case backup.Unsigned:
		why = fmt.Sprintf("has no signature, and backup_store.%s has a signing_key: it was made before the key was set, or by someone without it", s.Backup.Store)
	case backup.OtherStore:
		why = fmt.Sprintf("was signed for another store (%s) than backup_store.%s, with the same key: a copy from there, genuine in that store, not in this one", m.Store, s.Backup.Store)
	default:
		return "", nil
	}
	if !allow {
		return "", fmt.Errorf("backup %s %s. Restore it only if you trust it, with -allow-unsigned", m.ID, why)
	}
	return fmt.Sprintf("backup %s is %s: restoring it because -allow-unsigned was given", m.ID, m.Signed), nil
}

// mayRestore refuses a restore into volumes that are not the service's to replace: names of
// the service's that something else holds (ownership.check: another project's volume among
// them), and any volume a running container mounts that the restore does not stop (it stops
// only the live release): another project's, a leftover candidate, anything not made by the
// deployer. Files replaced under a running program corrupt its data, shared or not.
func (rs restorer) mayRestore(ctx context.Context, s *config.Service, live *Container, vols []RestoreVolume) error {
	if err := rs.own.checkOwnership(ctx, []*config.Service{s}); err != nil {
		return err
	}
	all, err := rs.Runtime.AllContainers(ctx)
	if err != nil {
		return err
	}
	var problems []string
	for _, v := range vols {
		for _, c := range all {
			if (c.Running() || c.State == "paused") && plan.Contains(c.Mounts, v.To) && (live == nil || c.ID != live.ID) {
				problems = append(problems, fmt.Sprintf("volume %s is mounted by %s, which runs", v.To, plan.Whose(c)))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("nothing was restored: %s; the restore stops only the service's live release, and files replaced under a running program would corrupt its data: stop it first", strings.Join(problems, "; "))
	}
	return nil
}

// restoreVolumes pairs the backup's volumes with the configured ones.
func restoreVolumes(s *config.Service, m *backup.Manifest, mapping map[string]string) ([]RestoreVolume, []string, error) {
	inBackup := map[string]bool{}
	for _, v := range m.Volumes {
		inBackup[v.Name] = true
	}
	for from, to := range mapping {
		if !inBackup[from] {
			return nil, nil, fmt.Errorf("-map %s=%s: backup %s has no volume %q (it holds %s)", from, to, m.ID, from, volumeList(m))
		}
		if !plan.Contains(s.Backup.Volumes, to) {
			return nil, nil, fmt.Errorf("-map %s=%s: service.%s does not back up a volume %q (backup.volumes = %s)", from, to, s.Name, to, strings.Join(s.Backup.Volumes, ", "))
		}
	}
	var out []RestoreVolume
	filled := map[string]string{}
	for _, v := range m.Volumes {
		to := v.Name
		if mapped, ok := mapping[v.Name]; ok {
			to = mapped
		}
		if !plan.Contains(s.Backup.Volumes, to) {
			return nil, nil, fmt.Errorf("backup %s holds volume %q, which service.%s does not back up (backup.volumes = %s): nothing was restored. If it was renamed since, say where it goes with -map %s=NEW_NAME",
				m.ID, v.Name, s.Name, strings.Join(s.Backup.Volumes, ", "), v.Name)
		}
		if other, ok := filled[to]; ok {
			return nil, nil, fmt.Errorf("volumes %q and %q of backup %s would both fill volume %q: map one of them elsewhere", other, v.Name, m.ID, to)
		}
		filled[to] = v.Name
		out = append(out, RestoreVolume{From: v.Name, To: to, Target: s.Volume(to).Target, Bytes: v.Bytes})
	}
	var untouched []string
	for _, name := range s.Backup.Volumes {
		if _, ok := filled[name]; !ok {
			untouched = append(untouched, name)
		}
	}
	return out, untouched, nil
}

func volumeList(m *backup.Manifest) string {
	var names []string
	for _, v := range m.Volumes {
		names = append(names, v.Name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// RestoreResult is what a restore did.
type RestoreResult struct {
	Safety *backup.Manifest // the backup of the data before the restore
	// Tamed lists, per volume, what was left out of the archive or changed (devices, setuid).
	Tamed map[string][]string
	// Started says whether a release was started on the restored data.
	Started bool
}

// Restore replaces the volumes of the plan with the backup, read from the archives its verify
// downloaded and checked (the store is not read again). Inside the deploy lock, before
// anything is backed up or stopped, a helper on the engine checks that every volume's
// filesystem has the room and the inodes the backup's files take. The current data is then
// backed up, whether the live release runs, is stopped or is gone, to the store and to this
// machine. If the replacement fails, the volumes that were emptied are put back from that local
// copy (none that was never emptied) and the release started again. It closes the plan.
func (a *Applier) Restore(ctx context.Context, service string, rp *RestorePlan) (*RestoreResult, error) {
	defer rp.Close()
	return a.restorer().restore(ctx, service, rp)
}

func (rs restorer) restore(ctx context.Context, service string, rp *RestorePlan) (*RestoreResult, error) {
	s, _, err := rs.serviceBackups(ctx, service)
	if err != nil {
		return nil, err
	}
	m := rp.Manifest
	if rp.verified == nil {
		return nil, fmt.Errorf("backup %s was not verified (its archives are not on this machine): prepare the restore first", m.ID)
	}
	helper, err := rs.hp.helperImage(ctx)
	if err != nil {
		return nil, err
	}
	unlock, err := rs.begin(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	obs, err := plan.Observe(ctx, rs.Runtime, rs.Project)
	if err != nil {
		return nil, err
	}
	var st *plan.ServiceState
	var live *Container
	if st = obs.Services[service]; st != nil {
		live = st.Live
	}
	if err := rs.mayRestore(ctx, s, live, rp.Volumes); err != nil {
		return nil, err
	}
	if err := rs.step(service, plan.StepCheckRoom, "", "check that every volume's filesystem has room for the backup's files", func() error {
		return rs.checkRoom(ctx, s, rp.Volumes, helper)
	}); err != nil {
		return nil, fmt.Errorf("nothing was changed: %w", err)
	}
	res := &RestoreResult{Tamed: map[string][]string{}}
	copies, err := os.MkdirTemp(rs.TempDir, "deployer-safety-")
	if err != nil {
		return nil, err
	}
	keepCopies := false
	defer func() {
		if !keepCopies {
			os.RemoveAll(copies)
		}
	}()
	if err := rs.step(service, plan.StepBackup, "", "back up the current data before replacing it", func() error {
		// The current data may be the damage being undone: a failed quick_check is recorded.
		var err error
		res.Safety, err = rs.safetyBackup(ctx, s, live, rp, helper, copies)
		return err
	}); err != nil {
		return res, fmt.Errorf("the current data could not be backed up, so nothing was restored: %w", err)
	}
	if live != nil && live.Running() {
		if err := rs.step(service, plan.StepStop, "", fmt.Sprintf("stop release %d", live.Release()), func() error {
			return rs.rel.stopRelease(context.WithoutCancel(ctx), s, live.ID, fmt.Sprintf("release %d", live.Release()))
		}); err != nil {
			return res, err
		}
		live.State = "exited"
	}
	ctx = context.WithoutCancel(ctx) // once stopped, the restore finishes: half a volume is worse
	var emptied []RestoreVolume
	for _, v := range rp.Volumes {
		var rep *backup.TameReport
		var touched bool
		err := rs.step(service, plan.StepRestore, v.To, fmt.Sprintf("replace the files of volume %s with %s of backup %s", v.To, v.From, m.ID), func() error {
			var err error
			open := func() (io.ReadCloser, error) { return rp.verified.Open(v.From) }
			rep, touched, err = rs.fillVolume(ctx, s, open, backup.Tame, v.To, v.Bytes, max(v.Bytes, v.Disk), v.Inodes, helper)
			var u untouched
			if err != nil && !errors.As(err, &u) {
				err = fmt.Errorf("backup %s: volume %s: %w", m.ID, v.From, err)
			}
			return err
		})
		if touched {
			emptied = append(emptied, v)
		}
		if rep != nil {
			if lines := rep.Lines(); len(lines) > 0 {
				res.Tamed[v.To] = lines
				for _, l := range lines {
					rs.warn(service, "volume %s: %s", v.To, l)
				}
			}
		}
		if err != nil {
			cause := fmt.Errorf("restore of volume %s failed: %w", v.To, err)
			if len(emptied) == 0 {
				return res, rs.restart(ctx, s, st, res, cause, "its data was left as it was")
			}
			err := rs.putBack(ctx, s, st, emptied, res, helper, copies, cause)
			keepCopies = errors.Is(err, errPutBackFailed)
			return res, err
		}
	}
	if live == nil {
		return res, nil
	}
	res.Started = true
	if err := rs.rel.resume(ctx, s, rs.cutover(s, false), plan.PlanCutover(s, !rs.remote(), false), st, &ServiceOutcome{Service: s.Name}); err != nil {
		return res, fmt.Errorf("the volumes were restored from %s, but release %d is not healthy on them: %w; to go back, run `deployer backups restore service.%s %s`", m.ID, live.Release(), err, s.Name, res.Safety.ID)
	}
	return res, nil
}

// safetyBackup backs up the volumes a restore replaces: from the live release (paused as the
// configuration says when it runs), or, with no live release, from a helper container that
// mounts them and never starts. Each volume's archive is also kept in copies, on this machine,
// for a put-back that does not depend on what the store holds by then.
func (rs restorer) safetyBackup(ctx context.Context, s *config.Service, live *Container, rp *RestorePlan, helper, copies string) (*backup.Manifest, error) {
	var names []string
	for _, v := range rp.Volumes {
		names = append(names, v.To)
	}
	reason := "before restoring " + rp.Manifest.ID
	if live != nil {
		// keep 0: pruning now could delete the very backup being restored.
		src := liveSource(s, live, names)
		src.copyDir = copies
		return rs.backups().from(ctx, s, src, reason, 0, true)
	}
	spec := ContainerSpec{Name: rs.Project.Name + "-" + s.Name + "-restore-source", Image: helper, Cmd: []string{"version"},
		Labels: map[string]string{plan.LabelProject: rs.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleOneOff}}
	src := backupSource{consistency: config.ConsistencyNone, copyDir: copies}
	for _, name := range names {
		v := s.Volume(name)
		spec.Volumes = append(spec.Volumes, VolumeMount{Name: v.Name, Target: v.Target})
		src.volumes = append(src.volumes, backup.Volume{Name: v.Name, Target: v.Target})
	}
	id, err := rs.hp.oneOffContainer(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer rs.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
	src.id = id
	return rs.backups().from(ctx, s, src, reason, 0, true)
}

// errPutBackFailed marks a restore whose put-back failed too: the service is left stopped.
var errPutBackFailed = errors.New("the put-back failed")

// putBack puts the volumes a failed restore emptied back from the safety backup's copy on this
// machine (as the engine gave them: modes, devices and capabilities kept), then starts the
// release again. If that fails too, the service is left stopped, the copy is kept, and the
// error says how to finish by hand.
func (rs restorer) putBack(ctx context.Context, s *config.Service, st *plan.ServiceState, emptied []RestoreVolume, res *RestoreResult, helper, copies string, cause error) error {
	safety := res.Safety
	var failed error
	for _, v := range emptied {
		err := rs.step(s.Name, plan.StepPutBack, v.To, fmt.Sprintf("put volume %s back from the safety backup %s", v.To, safety.ID), func() error {
			open := func() (io.ReadCloser, error) { return backup.OpenCopy(copies, v.To, safetyBytes(safety, v.To)) }
			_, _, err := rs.fillVolume(ctx, s, open, backup.Replay, v.To, safetyBytes(safety, v.To), 0, 0, helper)
			return err
		})
		if err != nil {
			failed = fmt.Errorf("volume %s: %w", v.To, err)
			break
		}
	}
	if failed != nil {
		return fmt.Errorf("%v; putting the data back from the safety backup %s failed too (%v), so the service is left stopped: %w. "+
			"The data before the restore is in backup %s (`deployer backups restore service.%s %s -auto-approve`, then `deployer apply`) and, "+
			"should the store have changed it since, in %s on this machine (a zstd-compressed tar of each volume), kept for that",
			cause, safety.ID, failed, errPutBackFailed, safety.ID, s.Name, safety.ID, copies)
	}
	return rs.restart(ctx, s, st, res, cause, "the data was put back from the safety backup "+safety.ID)
}

// restart starts the live release again after a restore that failed, on its data as it is
// now (what says how it got there), and says so after why it failed.
func (rs restorer) restart(ctx context.Context, s *config.Service, st *plan.ServiceState, res *RestoreResult, cause error, what string) error {
	msg := fmt.Sprintf("%v; %s", cause, what)
	if st == nil || st.Live == nil {
		return errors.New(msg)
	}
	res.Started = true
	if err := rs.rel.resume(ctx, s, rs.cutover(s, false), plan.PlanCutover(s, !rs.remote(), false), st, &ServiceOutcome{Service: s.Name}); err != nil {
		return fmt.Errorf("%s, but release %d does not start healthy on it: %v", msg, st.Live.Release(), err)
	}
	return fmt.Errorf("%s, and release %d was started on it", msg, st.Live.Release())
}

func safetyBytes(m *backup.Manifest, volume string) int64 {
	for _, v := range m.Volumes {
		if v.Name == volume {
			return v.Bytes
		}
	}
	return 0
}

// untouched marks a volume that a restore's helper refused to empty (it has not the room):
// nothing in it was removed, so nothing is put back into it.
type untouched struct{ error }

func (u untouched) Unwrap() error { return u.error }

// fillVolume replaces the files of volume to with an archive (open gives its tar stream, tame
// what reaches the engine): a helper container checks the space (need bytes, inodes files;
// 0 checks nothing) and empties the volume, then the archive is extracted into it through the
// engine, no more than bytes. touched says whether anything in the volume may have been removed:
// false when the helper did not run, or said it removed nothing (the error is then untouched).
func (rs restorer) fillVolume(ctx context.Context, s *config.Service, open func() (io.ReadCloser, error),
	tame func(io.Reader, io.Writer, string, int64) (*backup.TameReport, error), to string, bytes, need, inodes int64, helper string) (rep *backup.TameReport, touched bool, err error) {
	rc, err := open()
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	spec := ContainerSpec{Name: fmt.Sprintf("%s-%s-restore-%s", rs.Project.Name, s.Name, to), Image: helper,
		Cmd:     []string{"internal", "prepare-volume", "/volume", strconv.FormatInt(need, 10), strconv.FormatInt(inodes, 10)},
		Volumes: []VolumeMount{{Name: to, Target: "/volume"}}, Labels: map[string]string{plan.LabelProject: rs.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleOneOff}}
	id, err := rs.hp.oneOffContainer(ctx, spec)
	if err != nil {
		return nil, false, err
	}
	defer rs.Runtime.RemoveContainer(ctx, id)
	if err := rs.Runtime.StartContainer(ctx, id); err != nil {
		return nil, false, err
	}
	code, err := rs.Runtime.Wait(ctx, id)
	if err != nil {
		return nil, true, err
	}
	if code != 0 {
		logs, _ := rs.Runtime.Logs(ctx, id, logLines)
		msg := strings.TrimSpace(strings.ReplaceAll(logs, `{"untouched":true}`, ""))
		if lastJSONLine(logs) == `{"untouched":true}` {
			return nil, false, untouched{fmt.Errorf("preparing the volume failed (exit %d): %s", code, msg)}
		}
		return nil, true, fmt.Errorf("preparing the volume failed (exit %d): %s", code, msg)
	}
	// The archive's entries start with the base name of the mount point (the engine's copy API
	// names them so); they go under /volume in the helper.
	pr, pw := io.Pipe()
	var tameErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep, tameErr = tame(rc, pw, "volume", bytes) // nothing past the declared size reaches the volume
		pw.CloseWithError(tameErr)
	}()
	err = rs.Runtime.CopyTo(ctx, id, "/", pr)
	pr.CloseWithError(errExtractionEnded)
	<-done
	if tameErr != nil && !errors.Is(tameErr, errExtractionEnded) {
		return rep, true, tameErr // the archive itself is broken: that is the cause
	}
	return rep, true, err
}

var errExtractionEnded = errors.New("the engine stopped reading the archive")
