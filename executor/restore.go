package executor

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/deployer-dev/deployer/executor/backup"
)

// RestorePlan is what a restore will do, shown to the operator before it asks.
type RestorePlan struct {
	Manifest    *backup.Manifest
	Store       string
	LiveRelease int    // 0 when the service has no live release
	How         string // what happens to the service, and why
}

// PrepareRestore finds and fully verifies a backup (checksums, archives, SQLite), so that a
// restore of a damaged or tampered backup is refused before anything stops.
func (a *Applier) PrepareRestore(ctx context.Context, service, id string) (*RestorePlan, error) {
	a.red = newRedactor(a.Project)
	s := a.Project.Service(service)
	if s == nil {
		return nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	if s.Backup == nil {
		return nil, fmt.Errorf("service.%s has no backup block, so it has no backups to restore", service)
	}
	store, err := OpenStore(ctx, a.Project, s.Backup.Store)
	if err != nil {
		return nil, err
	}
	m, err := backup.Find(ctx, store, a.Project.Name, service, id)
	if err != nil {
		return nil, err
	}
	if err := a.step(service, "verify-backup", "download "+m.ID+" and check it against its manifest", func() error {
		return backup.Verify(ctx, store, m, a.TempDir)
	}); err != nil {
		return nil, err
	}
	rp := &RestorePlan{Manifest: m, Store: store.String()}
	obs, err := Observe(ctx, a.Runtime, a.Project.Name)
	if err != nil {
		return nil, err
	}
	if st := obs.Services[service]; st != nil && st.Live != nil {
		rp.LiveRelease = st.Live.Release()
		rp.How = fmt.Sprintf("The live release %d is backed up first, then stopped while its volumes are replaced, then started and health-checked: "+
			"the service is down meanwhile. It is stopped rather than restored through a candidate because the candidate shares the live "+
			"release's volumes, and files replaced under a running app would corrupt its data.", rp.LiveRelease)
	} else {
		rp.How = "No release is live, so nothing is stopped; the volumes are replaced, and the next apply starts the service on them."
	}
	return rp, nil
}

// Restore replaces the backed-up volumes of a service with a verified backup. The current data is
// backed up first and never deleted before that backup is complete.
func (a *Applier) Restore(ctx context.Context, service string, rp *RestorePlan) (*backup.Manifest, error) {
	s := a.Project.Service(service)
	m := rp.Manifest
	helper, err := a.helperImage(ctx)
	if err != nil {
		return nil, err
	}
	unlock, err := a.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	store, err := OpenStore(ctx, a.Project, s.Backup.Store)
	if err != nil {
		return nil, err
	}
	obs, err := Observe(ctx, a.Runtime, a.Project.Name)
	if err != nil {
		return nil, err
	}
	var live *Container
	if st := obs.Services[service]; st != nil {
		live = st.Live
	}
	var safety *backup.Manifest
	if live != nil {
		// keep 0: pruning now could delete the very backup being restored.
		if err := a.step(service, StepBackup, "back up the current data before replacing it", func() error {
			// The current data may be the damage being undone: a failed quick_check is recorded.
			safety, err = a.backupWith(ctx, s, live, "before restoring "+m.ID, 0, true)
			return err
		}); err != nil {
			return nil, fmt.Errorf("the current data could not be backed up, so nothing was restored: %w", err)
		}
		if err := a.step(service, "stop", fmt.Sprintf("stop release %d", live.Release()), func() error {
			return a.Runtime.StopContainer(context.WithoutCancel(ctx), live.ID, s.Deploy.StopTimeout)
		}); err != nil {
			return safety, err
		}
	}
	restart := func() error {
		if live == nil {
			return nil
		}
		return a.step(service, StepResume, fmt.Sprintf("start release %d on the restored data", live.Release()), func() error {
			if err := a.Runtime.StartContainer(context.WithoutCancel(ctx), live.ID); err != nil {
				return err
			}
			return nil
		})
	}
	ctx = context.WithoutCancel(ctx) // once stopped, the restore finishes: half a volume is worse
	for _, v := range m.Volumes {
		v := v
		err := a.step(service, "restore."+v.Name, fmt.Sprintf("replace the files of volume %s", v.Name), func() error {
			return a.restoreVolume(ctx, store, m, v, helper)
		})
		if err != nil {
			restart()
			return safety, fmt.Errorf("restore of volume %s failed: %w; the data before the restore is in backup %s", v.Name, err, safetyID(safety))
		}
	}
	if err := restart(); err != nil {
		return safety, err
	}
	if live != nil {
		if err := a.verify(ctx, s, live.ID); err != nil {
			return safety, fmt.Errorf("the volumes were restored from %s, but release %d is not healthy on them: %w; to go back, restore backup %s", m.ID, live.Release(), err, safetyID(safety))
		}
	}
	return safety, nil
}

func safetyID(m *backup.Manifest) string {
	if m == nil {
		return "(none: nothing was live)"
	}
	return m.ID
}

// restoreVolume empties the volume in a helper container, then extracts the archive into it.
func (a *Applier) restoreVolume(ctx context.Context, store backup.Store, m *backup.Manifest, v backup.VolumeArchive, helper string) error {
	rc, err := backup.OpenVolume(ctx, store, m, v.Name, a.TempDir)
	if err != nil {
		return err
	}
	defer rc.Close()
	name := fmt.Sprintf("%s-restore-%s", a.Project.Name, v.Name)
	id, err := a.Runtime.CreateContainer(ctx, ContainerSpec{Name: name, Image: helper, Cmd: []string{"internal", "clear-dir", "/volume"},
		Volumes: []VolumeMount{{Name: v.Name, Target: "/volume"}}, Labels: map[string]string{LabelProject: a.Project.Name, LabelRole: RoleOneOff}})
	if err != nil {
		return err
	}
	defer a.Runtime.RemoveContainer(ctx, id)
	if err := a.Runtime.StartContainer(ctx, id); err != nil {
		return err
	}
	code, err := a.Runtime.Wait(ctx, id)
	if err != nil {
		return err
	}
	if code != 0 {
		logs, _ := a.Runtime.Logs(ctx, id, logLines)
		return fmt.Errorf("emptying the volume failed (exit %d): %s", code, strings.TrimSpace(logs))
	}
	// The archive's entries start with the base name of the mount point (the engine's copy API
	// names them so); they go under /volume in the helper.
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(rebase(rc, pw, "volume")) }()
	return a.Runtime.CopyTo(ctx, id, "/", pr)
}

// rebase rewrites a tar stream's first path component to base.
func rebase(r io.Reader, w io.Writer, base string) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		name := hdr.Name
		if i := strings.IndexByte(name, '/'); i >= 0 {
			name = base + name[i:]
		} else {
			name = base + "/"
		}
		hdr.Name = name
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
