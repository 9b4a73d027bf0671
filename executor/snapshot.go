package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// snapshotter runs a backup's online SQLite snapshots, and sizes its volumes, in a helper
// container of the deployer that mounts the volumes and never touches the live release.
type snapshotter struct {
	rn     *run
	s      *config.Service
	helper string
	id     string // the helper container, once it has run
	// unavailable says why no helper can run (no helper image): Snapshot returns it.
	unavailable error
	// scratch is the volume the snapshots are written to: a volume, not the helper's own
	// filesystem, which some storage drivers (fuse-overlayfs) write ten times slower.
	scratch string
	report  *backup.SnapshotReport
}

// snapshotDeadline bounds the helper's run: a database read that long is stuck behind a writer.
const snapshotDeadline = 30 * time.Minute

// Snapshot mounts the volumes in a helper at /volumes/N and snapshots the databases into its
// /snapshots, then reads what it found.
func (sn *snapshotter) Snapshot(ctx context.Context, vols []backup.Volume, dbs []backup.DB) (*backup.SnapshotReport, error) {
	if sn.unavailable != nil {
		return nil, sn.unavailable
	}
	rn, s := sn.rn, sn.s
	scratch := rn.Project.Name + "-" + s.Name + "-snapshots"
	for _, svc := range rn.Project.Services {
		if svc.Volume(scratch) != nil {
			// Never write to, let alone remove, a volume a service uses.
			return nil, fmt.Errorf("%w: service.%s mounts a volume named %s, the snapshots' scratch volume", backup.ErrNoSnapshots, svc.Name, scratch)
		}
	}
	// Made with labels, so that one left by a kill is in the plan and the next apply removes it.
	// One of that name the deployer did not make is never used, let alone removed.
	err := rn.Runtime.CreateVolume(ctx, scratch, map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleScratch})
	if errors.Is(err, ErrNameTaken) {
		return nil, fmt.Errorf("%w: %v (remove it with `docker volume rm %s` if it is a leftover of an older deployer)", backup.ErrNoSnapshots, err, scratch)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot helper: %w", err)
	}
	sn.scratch = scratch
	spec := ContainerSpec{Name: rn.Project.Name + "-" + s.Name + "-snapshot", Image: sn.helper,
		Cmd:       []string{"internal", "sqlite-snapshot", "/snapshots"},
		Volumes:   []VolumeMount{{Name: sn.scratch, Target: "/snapshots"}},
		NoNetwork: true, // it reads volumes and writes one; it has nothing to reach
		Labels:    map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleOneOff}}
	for i, v := range vols {
		dir := "/volumes/" + strconv.Itoa(i)
		spec.Volumes = append(spec.Volumes, VolumeMount{Name: v.Name, Target: dir})
		n := 0
		for _, db := range dbs {
			if db.Volume == v.Name {
				spec.Cmd = append(spec.Cmd, dir, db.Path)
				n++
			}
		}
		if n == 0 {
			spec.Cmd = append(spec.Cmd, dir, "") // sized, no database
		}
	}
	id, err := rn.hp.oneOffContainer(ctx, spec)
	if err != nil {
		return nil, fmt.Errorf("snapshot helper: %w", err)
	}
	sn.id = id
	wctx, cancel := context.WithTimeout(ctx, snapshotDeadline)
	defer cancel()
	if err := rn.Runtime.StartContainer(wctx, id); err != nil {
		return nil, fmt.Errorf("snapshot helper: %w", err)
	}
	code, err := rn.Runtime.Wait(wctx, id)
	if err != nil {
		rn.Runtime.StopContainer(context.WithoutCancel(ctx), id, time.Second)
		return nil, fmt.Errorf("snapshot helper: %w", err)
	}
	if code != 0 {
		logs, _ := rn.Runtime.Logs(context.WithoutCancel(ctx), id, logLines)
		return nil, fmt.Errorf("%w (exit %d): %s", backup.ErrNoSnapshots, code, firstLine(strings.TrimSpace(logs)))
	}
	rc, err := sn.Open(ctx, "result.json")
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	rep := &backup.SnapshotReport{}
	if err := json.NewDecoder(io.LimitReader(rc, 4<<20)).Decode(rep); err != nil || len(rep.Volumes) != len(vols) {
		return nil, fmt.Errorf("snapshot helper: unreadable report (%v)", err)
	}
	sn.report = rep
	return rep, nil
}

// Open streams one file the helper wrote.
func (sn *snapshotter) Open(ctx context.Context, file string) (io.ReadCloser, error) {
	rc, err := sn.rn.hp.openFile(ctx, sn.id, "/snapshots/"+file)
	if err != nil {
		return nil, fmt.Errorf("snapshot helper: %w", err)
	}
	return rc, nil
}

// Close removes the helper and its scratch volume (a kill before leaves them; the next backup
// of the service reuses and removes them).
func (sn *snapshotter) Close() {
	ctx := context.Background()
	if sn.id != "" {
		sn.rn.Runtime.RemoveContainer(ctx, sn.id)
	}
	if sn.scratch != "" {
		if err := sn.rn.Runtime.RemoveVolume(ctx, sn.scratch); err != nil {
			sn.rn.warn(sn.s.Name, "the snapshots' scratch volume %s is left: %v; remove it with `docker volume rm %s`", sn.scratch, err, sn.scratch)
		}
	}
}

// describe says how the databases were snapshotted: online, and for a rollback journal how long
// the app's writers may have waited.
func (sn *snapshotter) describe() string {
	if sn.report == nil {
		return ""
	}
	var n int
	var parts []string
	for _, v := range sn.report.Volumes {
		for _, db := range v.DBs {
			if db.Error != "" {
				continue
			}
			n++
			if db.JournalMode != "wal" {
				wait := fmt.Sprintf("%.2fs", db.HeldSeconds)
				if db.HeldSeconds < 1 {
					wait = fmt.Sprintf("%.0f ms", db.HeldSeconds*1000)
				}
				parts = append(parts, fmt.Sprintf("%s in %s journal mode: its writers waited up to %s", db.Path, db.JournalMode, wait))
			}
		}
	}
	if n == 0 {
		return ""
	}
	out := plan.Plural(n, "database") + " snapshotted online"
	if len(parts) > 0 {
		out += " (" + strings.Join(parts, "; ") + ")"
	}
	return out
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
