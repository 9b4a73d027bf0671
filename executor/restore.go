package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
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
	_, err = rs.verifyBackup(ctx, sb, m)
	return m, err
}

// verifyBackup verifies a backup, and says what each volume's files take on a disk.
func (rs restorer) verifyBackup(ctx context.Context, sb *ServiceBackups, m *backup.Manifest) (disk map[string]int64, err error) {
	err = rs.step(sb.Expect.Service, StepVerifyBackup, "download "+m.ID+" and check it against its manifest", func() error {
		var verr error
		disk, verr = backup.VerifyDisk(ctx, sb.Store, m, sb.Keys, rs.TempDir)
		return verr
	})
	return disk, err
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
	if m.Signed == backup.Unsigned {
		if !opts.AllowUnsigned {
			return nil, fmt.Errorf("backup %s has no signature, and backup_store.%s has a signing_key: it was made before the key was set, or by someone without it. Restore it only if you trust it, with -allow-unsigned", m.ID, s.Backup.Store)
		}
		rp.Warnings = append(rp.Warnings, fmt.Sprintf("backup %s is not signed: restoring it because -allow-unsigned was given", m.ID))
	}
	if rp.Volumes, rp.Untouched, err = restoreVolumes(s, m, opts.Map); err != nil {
		return nil, err
	}
	disk, err := rs.verifyBackup(ctx, sb, m)
	if err != nil {
		return nil, err
	}
	for i := range rp.Volumes {
		rp.Volumes[i].Disk = disk[rp.Volumes[i].From]
	}
	obs, err := Observe(ctx, rs.Runtime, rs.Project)
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
	return rp, nil
}

// mayRestore refuses a restore into volumes that are not the service's to replace: names of
// the service's that something else holds (ownership.check: another project's volume among
// them), and any volume a running container mounts that the restore does not stop (it stops
// only the live release): another project's, a leftover candidate, anything not made by the
// deployer. Files replaced under a running program corrupt its data, shared or not.
func (rs restorer) mayRestore(ctx context.Context, s *config.Service, live *Container, vols []RestoreVolume) error {
	if err := rs.checkOwnership(ctx, []*config.Service{s}); err != nil {
		return err
	}
	all, err := rs.Runtime.AllContainers(ctx)
	if err != nil {
		return err
	}
	var problems []string
	for _, v := range vols {
		for _, c := range all {
			if (c.Running() || c.State == "paused") && contains(c.Mounts, v.To) && (live == nil || c.ID != live.ID) {
				problems = append(problems, fmt.Sprintf("volume %s is mounted by %s, which runs", v.To, whose(c)))
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
		if !contains(s.Backup.Volumes, to) {
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
		if !contains(s.Backup.Volumes, to) {
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

// Restore replaces the volumes of the plan with the backup. The current data is backed up
// first, whether the live release runs, is stopped or is gone; if the replacement fails, that
// backup is put back and the release started on it.
func (a *Applier) Restore(ctx context.Context, service string, rp *RestorePlan) (*RestoreResult, error) {
	return a.restorer().restore(ctx, service, rp)
}

func (rs restorer) restore(ctx context.Context, service string, rp *RestorePlan) (*RestoreResult, error) {
	s, sb, err := rs.serviceBackups(ctx, service)
	if err != nil {
		return nil, err
	}
	m := rp.Manifest
	helper, err := rs.helperImage(ctx)
	if err != nil {
		return nil, err
	}
	unlock, err := rs.begin(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	obs, err := Observe(ctx, rs.Runtime, rs.Project)
	if err != nil {
		return nil, err
	}
	var st *ServiceState
	var live *Container
	if st = obs.Services[service]; st != nil {
		live = st.Live
	}
	if err := rs.mayRestore(ctx, s, live, rp.Volumes); err != nil {
		return nil, err
	}
	res := &RestoreResult{Tamed: map[string][]string{}}
	if err := rs.step(service, StepBackup, "back up the current data before replacing it", func() error {
		// The current data may be the damage being undone: a failed quick_check is recorded.
		var err error
		res.Safety, err = rs.safetyBackup(ctx, s, live, rp, helper)
		return err
	}); err != nil {
		return res, fmt.Errorf("the current data could not be backed up, so nothing was restored: %w", err)
	}
	if live != nil && live.Running() {
		if err := rs.step(service, StepStop, fmt.Sprintf("stop release %d", live.Release()), func() error {
			return rs.stopRelease(context.WithoutCancel(ctx), s, live.ID, fmt.Sprintf("release %d", live.Release()))
		}); err != nil {
			return res, err
		}
		live.State = "exited"
	}
	ctx = context.WithoutCancel(ctx) // once stopped, the restore finishes: half a volume is worse
	var touched []RestoreVolume
	for _, v := range rp.Volumes {
		touched = append(touched, v)
		var rep *backup.TameReport
		err := rs.step(service, stepName(StepRestore, v.To), fmt.Sprintf("replace the files of volume %s with %s of backup %s", v.To, v.From, m.ID), func() error {
			var err error
			rep, err = rs.fillVolume(ctx, s, sb, m, v.From, v.To, v.Bytes, max(v.Bytes, v.Disk), helper)
			return err
		})
		if rep != nil {
			if lines := rep.Lines(); len(lines) > 0 {
				res.Tamed[v.To] = lines
				for _, l := range lines {
					rs.warn(service, "volume %s: %s", v.To, l)
				}
			}
		}
		if err != nil {
			return res, rs.putBack(ctx, s, sb, st, touched, res, helper, fmt.Errorf("restore of volume %s failed: %w", v.To, err))
		}
	}
	if live == nil {
		return res, nil
	}
	res.Started = true
	if err := rs.resume(ctx, s, rs.cutover(s, false), st, &ServiceOutcome{Service: s.Name}); err != nil {
		return res, fmt.Errorf("the volumes were restored from %s, but release %d is not healthy on them: %w; to go back, run `deployer backups restore service.%s %s`", m.ID, live.Release(), err, s.Name, res.Safety.ID)
	}
	return res, nil
}

// safetyBackup backs up the volumes a restore replaces: from the live release (paused as the
// configuration says when it runs), or, with no live release, from a helper container that
// mounts them and never starts.
func (rs restorer) safetyBackup(ctx context.Context, s *config.Service, live *Container, rp *RestorePlan, helper string) (*backup.Manifest, error) {
	var names []string
	for _, v := range rp.Volumes {
		names = append(names, v.To)
	}
	reason := "before restoring " + rp.Manifest.ID
	if live != nil {
		// keep 0: pruning now could delete the very backup being restored.
		return rs.backups().from(ctx, s, liveSource(s, live, names), reason, 0, true)
	}
	spec := ContainerSpec{Name: rs.Project.Name + "-" + s.Name + "-restore-source", Image: helper, Cmd: []string{"version"},
		Labels: map[string]string{LabelProject: rs.Project.Name, LabelService: s.Name, LabelRole: RoleOneOff}}
	src := backupSource{consistency: config.ConsistencyNone}
	for _, name := range names {
		v := s.Volume(name)
		spec.Volumes = append(spec.Volumes, VolumeMount{Name: v.Name, Target: v.Target})
		src.volumes = append(src.volumes, backup.Volume{Name: v.Name, Target: v.Target})
	}
	id, err := rs.oneOffContainer(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer rs.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
	src.id = id
	return rs.backups().from(ctx, s, src, reason, 0, true)
}

// oneOffContainer creates a helper container of the deployer, replacing one of the same name
// that an interrupted run left.
func (rn *run) oneOffContainer(ctx context.Context, spec ContainerSpec) (string, error) {
	id, err := rn.Runtime.CreateContainer(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		obs, oerr := Observe(ctx, rn.Runtime, rn.Project)
		if oerr != nil {
			return "", oerr
		}
		for _, c := range obs.All {
			if c.Name == spec.Name && c.Role() == RoleOneOff && c.Service() == spec.Labels[LabelService] {
				rn.Runtime.RemoveContainer(ctx, c.ID)
				return rn.Runtime.CreateContainer(ctx, spec)
			}
		}
		return "", rn.nameTaken(ctx, spec.Name, fmt.Sprintf("a one-off container of service.%s", spec.Labels[LabelService]))
	}
	return id, err
}

// putBack restores the volumes a failed restore touched from the safety backup, then starts the
// release again. If that fails too, the service is left stopped and the error says how to
// finish by hand.
func (rs restorer) putBack(ctx context.Context, s *config.Service, sb *ServiceBackups, st *ServiceState, touched []RestoreVolume, res *RestoreResult, helper string, cause error) error {
	safety := res.Safety
	var failed error
	for _, v := range touched {
		err := rs.step(s.Name, stepName(StepPutBack, v.To), fmt.Sprintf("put volume %s back from the safety backup %s", v.To, safety.ID), func() error {
			_, err := rs.fillVolume(ctx, s, sb, safety, v.To, v.To, safetyBytes(safety, v.To), safetyBytes(safety, v.To), helper)
			return err
		})
		if err != nil {
			failed = fmt.Errorf("volume %s: %w", v.To, err)
			break
		}
	}
	if failed != nil {
		return fmt.Errorf("%v; putting the data back from the safety backup %s failed too (%v), so the service is left stopped. "+
			"To finish by hand: `deployer backups restore service.%s %s -auto-approve`, then `deployer apply`", cause, safety.ID, failed, s.Name, safety.ID)
	}
	msg := fmt.Sprintf("%v; the data was put back from the safety backup %s", cause, safety.ID)
	if st == nil || st.Live == nil {
		return errors.New(msg)
	}
	res.Started = true
	if err := rs.resume(ctx, s, rs.cutover(s, false), st, &ServiceOutcome{Service: s.Name}); err != nil {
		return fmt.Errorf("%s, but release %d does not start healthy on it: %v", msg, st.Live.Release(), err)
	}
	return fmt.Errorf("%s and release %d was started on it", msg, st.Live.Release())
}

func safetyBytes(m *backup.Manifest, volume string) int64 {
	for _, v := range m.Volumes {
		if v.Name == volume {
			return v.Bytes
		}
	}
	return 0
}

// fillVolume replaces the files of volume to with the archive of volume from in backup m: a
// helper container checks the space (need bytes) and empties the volume, then the archive,
// tamed, is extracted into it through the engine, no more than the bytes it declares.
func (rs restorer) fillVolume(ctx context.Context, s *config.Service, sb *ServiceBackups, m *backup.Manifest, from, to string, bytes, need int64, helper string) (*backup.TameReport, error) {
	rc, err := backup.OpenVolume(ctx, sb.Store, m, from, sb.Keys, rs.TempDir)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	spec := ContainerSpec{Name: fmt.Sprintf("%s-%s-restore-%s", rs.Project.Name, s.Name, to), Image: helper,
		Cmd:     []string{"internal", "prepare-volume", "/volume", strconv.FormatInt(need, 10)},
		Volumes: []VolumeMount{{Name: to, Target: "/volume"}}, Labels: map[string]string{LabelProject: rs.Project.Name, LabelService: s.Name, LabelRole: RoleOneOff}}
	id, err := rs.oneOffContainer(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer rs.Runtime.RemoveContainer(ctx, id)
	if err := rs.Runtime.StartContainer(ctx, id); err != nil {
		return nil, err
	}
	code, err := rs.Runtime.Wait(ctx, id)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		logs, _ := rs.Runtime.Logs(ctx, id, logLines)
		return nil, fmt.Errorf("preparing the volume failed (exit %d): %s", code, strings.TrimSpace(logs))
	}
	// The archive's entries start with the base name of the mount point (the engine's copy API
	// names them so); they go under /volume in the helper.
	pr, pw := io.Pipe()
	var rep *backup.TameReport
	var tameErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		rep, tameErr = backup.Tame(rc, pw, "volume", bytes) // nothing past the declared size reaches the volume
		pw.CloseWithError(tameErr)
	}()
	err = rs.Runtime.CopyTo(ctx, id, "/", pr)
	pr.CloseWithError(errExtractionEnded)
	<-done
	if tameErr != nil && !errors.Is(tameErr, errExtractionEnded) {
		return rep, fmt.Errorf("backup %s: volume %s: %w", m.ID, from, tameErr) // the archive itself is broken: that is the cause
	}
	return rep, err
}

var errExtractionEnded = errors.New("the engine stopped reading the archive")
