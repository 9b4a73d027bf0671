package executor

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
)

// EventProgress reports bytes moved by a long transfer (Bytes of Total, Total 0 when unknown).
const EventProgress = "progress"

// OpenStore opens a configured backup store; a local directory is relative to the project.
func OpenStore(ctx context.Context, p *config.Project, name string) (backup.Store, error) {
	st := p.Stores[name]
	if st == nil {
		return nil, fmt.Errorf("backup_store %q is not declared", name)
	}
	switch st.Kind {
	case "local":
		dir := st.Directory
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(p.Dir, dir)
		}
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		return &backup.Local{Dir: dir}, nil
	case "s3":
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
		sb.Expect.DBs = append(sb.Expect.DBs, backup.DB{Name: db.Name, Volume: db.Volume, Path: db.Path})
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
	consistency    string // pause (a running container) or none
	logs           bool
	volumes        []backup.Volume
}

// liveSource reads a live release's backup volumes as the configuration says; a stopped one is
// not paused (nothing writes to it), and its logs are kept as configured.
func liveSource(s *config.Service, live *Container, names []string) backupSource {
	src := backupSource{id: live.ID, release: live.Release(), image: live.ImageRef(), imageID: live.ImageID,
		consistency: string(s.Backup.Consistency), logs: s.Backup.Logs}
	if !live.Running() || live.State == "paused" {
		src.consistency = "none"
	}
	for _, name := range names {
		if v := s.Volume(name); v != nil {
			src.volumes = append(src.volumes, backup.Volume{Name: v.Name, Target: v.Target})
		}
	}
	return src
}

// takeBackup backs up the service's backup volumes from a live container.
func (a *Applier) takeBackup(ctx context.Context, s *config.Service, live *Container, reason string, keep int) (*backup.Manifest, error) {
	return a.backupFrom(ctx, s, liveSource(s, live, s.Backup.Volumes), reason, keep, false)
}

// backupFrom takes a backup; lenient records failed SQLite checks instead of failing.
func (a *Applier) backupFrom(ctx context.Context, s *config.Service, src backupSource, reason string, keep int, lenient bool) (*backup.Manifest, error) {
	sb, err := OpenBackups(ctx, a.Project, s, "")
	if err != nil {
		return nil, err
	}
	req := backup.Request{
		Store: sb.Store, Source: a.Runtime, Project: a.Project.Name, Service: s.Name, Release: src.release,
		Image: src.image, ImageID: src.imageID, ContainerID: src.id, Consistency: src.consistency, Volumes: src.volumes,
		Logs: src.logs, Keep: keep, DeployerVersion: a.Version, Reason: reason, TempDir: a.TempDir, Lenient: lenient, Keys: sb.Keys,
		Progress: func(p backup.Progress) {
			a.emit(Event{Type: EventProgress, Service: s.Name, Step: StepBackup, Detail: p.Volume + " " + p.Phase, Bytes: p.Bytes, Total: p.Total})
		},
	}
	for _, db := range s.SQLite {
		if db.QuickCheck {
			req.SQLite = append(req.SQLite, backup.DB{Name: db.Name, Volume: db.Volume, Path: db.Path})
		}
	}
	m, err := backup.Take(ctx, req)
	if err != nil {
		return nil, err
	}
	var size int64
	for _, v := range m.Volumes {
		size += v.Size
	}
	detail := fmt.Sprintf("backup %s in %s: %s, %s stored", m.ID, sb.Store, plural(len(m.Volumes), "volume"), HumanBytes(size))
	if m.Encryption != "" {
		detail += ", encrypted (age)"
	}
	if m.Signature != "" {
		detail += ", signed"
	}
	if m.Consistency == "pause" {
		detail += fmt.Sprintf(", live paused %.2fs", m.PausedSeconds)
	}
	if len(m.SQLite) > 0 {
		detail += fmt.Sprintf(", %s quick_check ok", plural(len(m.SQLite), "database"))
	}
	a.emit(Event{Type: EventLog, Service: s.Name, Step: StepBackup, Detail: detail})
	return m, nil
}

// HumanBytes formats a byte count for people (KiB, MiB, GiB).
func HumanBytes(n int64) string { return backup.HumanBytes(n) }

// checkSQLite seeds the candidate's database when it is empty, then runs quick_check on a copy
// of it, taken while the candidate is paused so that the copy is consistent.
func (a *Applier) checkSQLite(ctx context.Context, s *config.Service, r *release, cand *ContainerState, db *config.SQLite) error {
	vol := s.Volume(db.Volume)
	file := path.Join(vol.Target, db.Path)
	dir, err := os.MkdirTemp(a.TempDir, "deployer-sqlite-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	copyOut := func() (string, error) {
		if err := a.Runtime.Pause(ctx, cand.ID); err != nil {
			return "", err
		}
		defer a.Runtime.Unpause(context.WithoutCancel(ctx), cand.ID)
		local := filepath.Join(dir, "db")
		found, err := a.copyFile(ctx, cand.ID, file, local)
		if err != nil || !found {
			return "", err
		}
		if _, err := a.copyFile(ctx, cand.ID, file+"-wal", local+"-wal"); err != nil {
			return "", err
		}
		return local, nil
	}
	local, err := copyOut()
	if err != nil {
		return err
	}
	empty := local == ""
	if !empty {
		// A database that cannot be read is not empty: quick_check says what is wrong with it.
		empty, _ = backup.Empty(ctx, local)
	}
	if empty {
		if len(db.SeedIfEmpty) == 0 {
			if local == "" {
				return fmt.Errorf("%s does not exist in the candidate: check sqlite.path, or set seed_if_empty to create it", file)
			}
			return nil // empty and nothing to seed it with: a new database is ok
		}
		a.emit(Event{Type: EventLog, Service: s.Name, Step: StepSQLite + "." + db.Name, Detail: fmt.Sprintf("%s is empty: seeding with `%s`", file, a.red.words(db.SeedIfEmpty))})
		if err := a.oneOff(ctx, s, r, "seed", db.SeedIfEmpty); err != nil {
			return fmt.Errorf("seed_if_empty: %w", err)
		}
		os.Remove(filepath.Join(dir, "db-wal"))
		if local, err = copyOut(); err != nil {
			return err
		}
		if local == "" {
			return fmt.Errorf("seed_if_empty `%s` exited 0 but %s still does not exist", a.red.words(db.SeedIfEmpty), file)
		}
	}
	if !db.QuickCheck {
		return nil
	}
	if err := backup.QuickCheck(ctx, local); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// copyFile copies one file out of a container; found is false when it does not exist.
func (a *Applier) copyFile(ctx context.Context, id, file, local string) (bool, error) {
	rc, err := a.Runtime.CopyFrom(ctx, id, file)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return false, fmt.Errorf("copy %s: %w", file, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return false, fmt.Errorf("%s is not a regular file", file)
	}
	f, err := os.Create(local)
	if err != nil {
		return false, err
	}
	_, err = io.Copy(f, tr)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err == nil, err
}

// Backup takes a backup of a service's live release on demand.
func (a *Applier) Backup(ctx context.Context, service string) (*backup.Manifest, error) {
	a.red = newRedactor(a.Project)
	s := a.Project.Service(service)
	if s == nil {
		return nil, fmt.Errorf("service.%s is not in the configuration", service)
	}
	if err := a.Runtime.Ping(ctx); err != nil {
		return nil, err
	}
	unlock, err := a.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	obs, err := Observe(ctx, a.Runtime, a.Project.Name)
	if err != nil {
		return nil, err
	}
	st := obs.Services[service]
	if st == nil || st.Live == nil {
		return nil, fmt.Errorf("service.%s has no live release to back up", service)
	}
	var m *backup.Manifest
	err = a.step(service, StepBackup, fmt.Sprintf("back up release %d", st.Live.Release()), func() error {
		var err error
		if s.Backup == nil {
			return fmt.Errorf("service.%s has no backup block: add one naming the volumes to back up", s.Name)
		}
		m, err = a.takeBackup(ctx, s, st.Live, "on demand", s.Backup.Keep)
		return err
	})
	return m, err
}

// helperImage is the image the proxy and restores run in: docker.proxy_image when the
// configuration names one, else one built (once per binary) from the deployer's own binary,
// FROM scratch, when that binary can run on the engine.
func (a *Applier) helperImage(ctx context.Context) (string, error) {
	if a.helperID != "" {
		return a.helperID, nil
	}
	if ref := a.Project.Docker.ProxyImage; ref != "" {
		if id, err := a.Runtime.ImageID(ctx, ref); err == nil {
			return id, nil
		}
		id, err := a.Runtime.PullImage(ctx, ref, a.registries(), nil)
		if err != nil {
			return "", fmt.Errorf("docker.proxy_image %q: %w", ref, err)
		}
		return id, nil
	}
	osName, arch, err := a.Runtime.Platform(ctx)
	if err != nil {
		return "", err
	}
	why := errors.New("the deployer does not know where its own binary is")
	var self *selfImage
	if a.SelfBinary != "" {
		self, why = imageOfSelf(a.SelfBinary, osName, arch)
	}
	if why != nil {
		alt := "(deploys with cutover = \"restart\" do without it on a local engine; restores always need it)"
		if a.remote() {
			alt = "(on a remote engine every deploy needs it: the health checks run from the proxy, on the engine's host)"
		}
		return "", fmt.Errorf("the proxy and restores run the deployer itself in a container, and this one cannot run on the engine: %v.\n"+
			"Build a deployer for the engine (in a checkout of its source) and name its image in the configuration:\n"+
			"  GOOS=%s GOARCH=%s CGO_ENABLED=0 go build -o deployer ./cmd/deployer\n"+
			"  printf 'FROM scratch\\nCOPY deployer /deployer\\nENTRYPOINT [\"/deployer\"]\\n' | docker build -t deployer-proxy:%s -f - .\n"+
			"  docker { proxy_image = \"deployer-proxy:%s\" }   # in the configuration (push it to your registry for a remote engine)\n"+
			"%s", why, osName, arch, a.versionTag(), a.versionTag(), alt)
	}
	id, err := a.buildSelfImage(ctx, self)
	if err == nil {
		a.helperID = id
	}
	return id, err
}

// buildSelfImage builds (once per binary and libraries: the tag is named after them) the image
// of the deployer FROM scratch.
func (a *Applier) buildSelfImage(ctx context.Context, self *selfImage) (string, error) {
	df := "FROM scratch\nCOPY rootfs/ /\nENTRYPOINT [\"/deployer\"]\n"
	h := sha256.New()
	h.Write([]byte(df))
	paths := sortedKeys(self.files)
	contents := map[string][]byte{}
	for _, p := range append([]string{""}, paths...) {
		src := self.binary
		if p != "" {
			src = self.files[p]
		}
		b, err := os.ReadFile(src)
		if err != nil {
			return "", err
		}
		contents[p] = b
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
	}
	tag := "deployer-helper:" + hex.EncodeToString(h.Sum(nil))[:12]
	if id, err := a.Runtime.ImageID(ctx, tag); err == nil {
		return id, nil
	}
	dir, err := os.MkdirTemp(a.TempDir, "deployer-helper-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for p, b := range contents {
		dst := filepath.Join(dir, "rootfs", "deployer")
		if p != "" {
			dst = filepath.Join(dir, "rootfs", p)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		return "", err
	}
	return a.Runtime.BuildImage(ctx, BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: tag, Labels: map[string]string{"deployer.image": "helper"}})
}

// versionTag is the deployer's version as an image tag.
func (a *Applier) versionTag() string {
	v := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, a.Version)
	if v == "" {
		return "latest"
	}
	return v
}
