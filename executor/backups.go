package executor

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/plan"
)

// OpenStore opens a configured backup store; a local directory is relative to the project.
func OpenStore(ctx context.Context, p *config.Project, name string) (backup.Store, error) {
	st := p.Stores[name]
	if st == nil {
		return nil, fmt.Errorf("backup_store %q is not declared", name)
	}
	switch st.Kind {
	case config.StoreLocal:
		dir := st.Directory
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(p.Dir, dir)
		}
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		return &backup.Local{Dir: dir}, nil
	case config.StoreS3:
		return backup.NewS3(ctx, backup.S3Config{Bucket: st.Bucket, Prefix: st.Prefix, Region: st.Region, Endpoint: st.Endpoint, PathStyle: st.PathStyle,
			SSE: st.SSE, KMSKeyID: st.KMSKeyID})
	}
	return nil, fmt.Errorf("backup_store %q has unknown kind %q", name, st.Kind)
}

// ServiceBackups is a service's backup store with the keys that encrypt, decrypt and sign its
// backups, and what their manifests must agree with.
type ServiceBackups struct {
	Store  backup.Store
	Keys   *backup.Keys
	Expect backup.Expect
}

// OpenBackups opens the backup store of a service. identityFile is the age identity that
// decrypts encrypted backups ("" when none is given: needed only to read encrypted ones).
func OpenBackups(ctx context.Context, p *config.Project, s *config.Service, identityFile string) (*ServiceBackups, error) {
	if s.Backup == nil {
		return nil, fmt.Errorf("service.%s has no backup block: add one naming the volumes to back up", s.Name)
	}
	store, err := OpenStore(ctx, p, s.Backup.Store)
	if err != nil {
		return nil, err
	}
	keys := &backup.Keys{IdentitySource: "DEPLOYER_AGE_IDENTITY=FILE or -identity FILE"}
	cfg := p.Stores[s.Backup.Store]
	if len(cfg.AgeRecipients) > 0 {
		if keys.Recipients, err = backup.ParseRecipients(cfg.AgeRecipients); err != nil {
			return nil, fmt.Errorf("backup_store.%s: %w", cfg.Name, err)
		}
	}
	if cfg.SigningKey != "" {
		keys.SigningKey = []byte(cfg.SigningKey)
	}
	if identityFile != "" {
		if keys.Identities, err = backup.LoadIdentities(identityFile); err != nil {
			return nil, err
		}
	}
	sb := &ServiceBackups{Store: store, Keys: keys, Expect: backup.Expect{Project: p.Name, Service: s.Name}}
	for _, db := range s.SQLite {
		sb.Expect.DBs = append(sb.Expect.DBs, backup.DB{Name: db.Name, Volume: db.Volume, Path: db.Path, Check: db.QuickCheck})
	}
	return sb, nil
}

// List lists the service's backups, checked against the configuration.
func (b *ServiceBackups) List(ctx context.Context) (*backup.Listing, error) {
	return backup.List(ctx, b.Store, b.Expect, b.Keys)
}

// backupSource is the container a backup reads the volumes from, and how.
type backupSource struct {
	id             string
	release        int
	image, imageID string
	consistency    config.Consistency // pause (a running container) or none
	logs           bool
	volumes        []backup.Volume
	migration      *backup.MigrationRecord
	// still: nothing writes to the volumes (a copy set aside): read as they are, with no
	// online snapshot (which would read the service's volume of the same name).
	still bool
	// copyDir, when set, also gets each volume's archive, on this machine (a restore's safety
	// backup, put back from there).
	copyDir string
}

// liveSource reads a live release's backup volumes as the configuration says; a stopped one is
// not paused (nothing writes to it), and its logs are kept as configured.
func liveSource(s *config.Service, live *Container, names []string) backupSource {
	src := backupSource{id: live.ID, release: live.Release(), image: live.ImageRef(), imageID: live.ImageID,
		consistency: s.Backup.Consistency, logs: s.Backup.Logs}
	if !live.Running() || live.State == "paused" {
		src.consistency = config.ConsistencyNone
	}
	for _, name := range names {
		if v := s.Volume(name); v != nil {
			c := s.Backup.ConsistencyOf(v.Name)
			if src.consistency == config.ConsistencyNone {
				c = config.ConsistencyNone
			}
			src.volumes = append(src.volumes, backup.Volume{Name: v.Name, Target: v.Target, Consistency: string(c)})
		}
	}
	return src
}

// backups takes a run's backups.
type backups struct{ rn *run }

func (rn *run) backups() backups { return backups{rn: rn} }

// take backs up the service's backup volumes from a live container.
func (b backups) take(ctx context.Context, s *config.Service, live *Container, reason string, keep int) (*backup.Manifest, error) {
	return b.takeWith(ctx, s, live, reason, keep, nil)
}

// takeWith is take for a deploy whose migration's record (its dry-run's diff and output) the
// backup keeps in its manifest.
func (b backups) takeWith(ctx context.Context, s *config.Service, live *Container, reason string, keep int, mig *backup.MigrationRecord) (*backup.Manifest, error) {
	src := liveSource(s, live, s.Backup.Volumes)
	src.migration = mig
	return b.from(ctx, s, src, reason, keep, false)
}

// from takes a backup; lenient records failed SQLite checks instead of failing.
func (b backups) from(ctx context.Context, s *config.Service, src backupSource, reason string, keep int, lenient bool) (*backup.Manifest, error) {
	rn := b.rn
	sb, err := OpenBackups(ctx, rn.Project, s, "")
	if err != nil {
		return nil, err
	}
	req := backup.Request{
		Store: sb.Store, Source: rn.Runtime, Project: rn.Project.Name, Service: s.Name, Release: src.release,
		Image: src.image, ImageID: src.imageID, ContainerID: src.id, Consistency: string(src.consistency), Volumes: src.volumes,
		Warn: func(msg string) { rn.warn(s.Name, "%s", msg) },
		Logs: src.logs, Keep: keep, DeployerVersion: rn.Version, Reason: reason, TempDir: rn.TempDir, Lenient: lenient, Keys: sb.Keys, Migration: src.migration,
		CopyDir: src.copyDir,
		Progress: func(p backup.Progress) {
			rn.emit(Event{Type: EventProgress, Service: s.Name, Step: string(plan.StepBackup), Detail: p.Volume + " " + p.Phase, Bytes: p.Bytes, Total: p.Total})
		},
	}
	req.SQLite = sb.Expect.DBs
	sn := &snapshotter{rn: rn, s: s}
	if !src.still {
		sn = b.snapshotter(ctx, s)
		req.Snapshots = sn
	}
	m, err := backup.Take(ctx, req)
	if err != nil {
		return nil, err
	}
	detail := describeBackup(m, sb.Store)
	if d := sn.describe(); d != "" {
		detail += ", " + d
	}
	rn.log(s.Name, plan.StepBackup, "%s", detail)
	return m, nil
}

// snapshotter is how a backup snapshots its databases online and sizes its volumes: in a
// helper container of the deployer. Without a helper image its snapshots cannot run, and Take
// copies the databases with their volumes, as the volumes' consistency says, and says so.
func (b backups) snapshotter(ctx context.Context, s *config.Service) *snapshotter {
	helper, err := b.rn.hp.helperImage(ctx)
	if err != nil {
		return &snapshotter{rn: b.rn, s: s, unavailable: fmt.Errorf("%w: %s", backup.ErrNoSnapshots, firstLine(err.Error()))}
	}
	return &snapshotter{rn: b.rn, s: s, helper: helper}
}

// describeBackup says what a backup holds and how it was taken.
func describeBackup(m *backup.Manifest, store backup.Store) string {
	var size int64
	for _, v := range m.Volumes {
		size += v.Size
	}
	detail := fmt.Sprintf("backup %s in %s: %s, %s stored", m.ID, store, plan.Plural(len(m.Volumes), "volume"), HumanBytes(size))
	if m.Encryption != "" {
		detail += ", encrypted (age)"
	}
	if m.Signature != "" {
		detail += ", signed"
	}
	if m.PausedSeconds > 0 {
		detail += fmt.Sprintf(", live paused %.2fs", m.PausedSeconds)
	} else {
		detail += ", live not paused"
	}
	if len(m.SQLite) > 0 {
		detail += fmt.Sprintf(", %s quick_check ok", plan.Plural(len(m.SQLite), "database"))
	}
	return detail
}

// HumanBytes formats a byte count for people (KiB, MiB, GiB).
func HumanBytes(n int64) string { return backup.HumanBytes(n) }

// Backup takes a backup of a service's live release on demand.
func (a *Applier) Backup(ctx context.Context, service string) (*backup.Manifest, error) {
	s := a.Project.Service(service)
	if s == nil {
		return nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	rn := a.newRun()
	unlock, err := rn.begin(ctx, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := rn.own.checkOwnership(ctx, []*config.Service{s}); err != nil {
		return nil, err
	}
	obs, err := plan.Observe(ctx, a.Runtime, a.Project)
	if err != nil {
		return nil, err
	}
	st := obs.Services[service]
	if st == nil || st.Live == nil {
		return nil, fmt.Errorf("service.%s has no live release to back up", service)
	}
	var m *backup.Manifest
	if s.Backup != nil {
		if w := plan.UnsignedStoreWarning(a.Project.Stores[s.Backup.Store]); w != "" {
			rn.warn(service, "%s", w)
		}
	}
	err = rn.step(service, plan.StepBackup, "", fmt.Sprintf("back up release %d", st.Live.Release()), func() error {
		var err error
		if s.Backup == nil {
			return fmt.Errorf("service.%s has no backup block: add one naming the volumes to back up", s.Name)
		}
		m, err = rn.backups().take(ctx, s, st.Live, "on demand", s.Backup.Keep)
		return err
	})
	return m, err
}
