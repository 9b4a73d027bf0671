package config

import (
	"encoding/json"
	"strconv"
	"time"
)

// Attributes flattens the service's normalized spec into path -> value, the form plans diff,
// hash and record on the containers they create. Each value is a JSON literal ("text", 5, true,
// ["a","b"]), so its type survives. Paths use block labels and container ports rather than
// positions, so reordering blocks changes nothing.
func (s *Service) Attributes() map[string]string {
	a := map[string]string{}
	a[AttrContainerName] = str(s.ContainerName)
	a[AttrImage] = str(s.Image)
	if b := s.Build; b != nil {
		a[AttrBuildContext] = str(b.Context)
		a[AttrBuildDockerfile] = str(b.Dockerfile)
		for k, v := range b.Args {
			a[BuildArgAttr(k)] = str(v)
		}
		if len(b.Before) > 0 {
			a[AttrBuildBefore] = list(b.Before)
		}
	}
	if len(s.Command) > 0 {
		a[AttrCommand] = list(s.Command)
	}
	s.runAttrs(a)
	s.checkAttrs(a)
	if b := s.Backup; b != nil {
		a[AttrBackupStore] = str(b.Store)
		a[AttrBackupVolumes] = list(b.Volumes)
		a[AttrBackupConsistency] = str(string(b.Consistency))
		for name, c := range b.VolumeConsistency {
			a[BackupVolumeAttr(name, BackupVolumeConsistency)] = str(string(c))
		}
		a[AttrBackupKeep] = num(b.Keep)
		a[AttrBackupLogs] = boolean(b.Logs)
	}
	for _, h := range s.Hooks {
		a[HookAttr(h.When, HookCommand)] = list(h.Command)
	}
	if m := s.Migration; m != nil {
		a[AttrMigrationCommand] = list(m.Command)
		a[AttrMigrationSQLite] = str(m.SQLite)
		a[AttrMigrationDeadline] = dur(m.Deadline)
		a[AttrMigrationDryRun] = boolean(m.DryRun)
		a[AttrMigrationAllowDestructive] = boolean(m.AllowDestructive)
		a[AttrMigrationHoldTimeout] = dur(m.HoldTimeout)
	}
	s.hostAttrs(a)
	d := s.Deploy
	a[AttrDeployCutover] = str(string(d.Cutover))
	a[AttrDeployDrain] = dur(d.Drain)
	a[AttrDeployStopTimeout] = dur(d.StopTimeout)
	a[AttrDeployAutoRollback] = boolean(d.AutoRollback)
	a[AttrDeployKeep] = num(d.KeepReleases)
	return a
}

// runAttrs are what a release runs with: its environment, ports and volumes.
func (s *Service) runAttrs(a map[string]string) {
	for k, v := range s.Env {
		a[EnvAttr(k)] = str(v)
	}
	for _, p := range s.Ports {
		a[PortAttr(p.Container, PortHost)] = num(p.Host)
		if p.Candidate != 0 {
			a[PortAttr(p.Container, PortCandidate)] = num(p.Candidate)
		}
		a[PortAttr(p.Container, PortProtocol)] = str(p.Protocol)
	}
	for _, v := range s.Volumes {
		a[VolumeAttr(v.Name, VolumeTarget)] = str(v.Target)
		if v.Shared { // recorded only when set: the releases of other projects read it
			a[VolumeAttr(v.Name, VolumeShared)] = boolean(true)
		}
	}
}

// checkAttrs are the candidate's checks: health check, canaries, SQLite.
func (s *Service) checkAttrs(a map[string]string) {
	if h := s.HealthCheck; h != nil {
		a[AttrHealthPath] = str(h.Path)
		if len(h.Status) > 0 {
			a[AttrHealthStatus] = ints(h.Status)
		}
		a[AttrHealthInterval] = dur(h.Interval)
		a[AttrHealthTimeout] = dur(h.Timeout)
		a[AttrHealthHealthy] = num(h.Healthy)
		a[AttrHealthDeadline] = dur(h.Deadline)
	}
	for _, c := range s.Canaries {
		a[CanaryAttr(c.Name, CanaryPath)] = str(c.Path)
		if len(c.Status) > 0 {
			a[CanaryAttr(c.Name, CanaryStatus)] = ints(c.Status)
		}
		if c.BodyContains != "" {
			a[CanaryAttr(c.Name, CanaryBodyContains)] = str(c.BodyContains)
		}
	}
	if sm := s.Smoke; sm != nil {
		a[AttrSmokeRequests] = num(sm.Requests)
		if sm.Duration > 0 {
			a[AttrSmokeDuration] = dur(sm.Duration)
		}
		a[AttrSmokeConcurrency] = num(sm.Concurrency)
		a[AttrSmokePaths] = list(sm.Paths)
		a[AttrSmokeMaxErrorRate] = strconv.FormatFloat(sm.MaxErrorRate, 'f', -1, 64)
		a[AttrSmokeP95] = dur(sm.P95)
	}
	for _, d := range s.SQLite {
		a[SQLiteAttr(d.Name, SQLiteVolume)] = str(d.Volume)
		a[SQLiteAttr(d.Name, SQLitePath)] = str(d.Path)
		a[SQLiteAttr(d.Name, SQLiteQuickCheck)] = boolean(d.QuickCheck)
		if len(d.SeedIfEmpty) > 0 {
			a[SQLiteAttr(d.Name, SQLiteSeedIfEmpty)] = list(d.SeedIfEmpty)
		}
	}
}

// hostAttrs are the engine's settings of a release. They appear only when they are set, so that
// releases made before they existed are not shown as changed.
func (s *Service) hostAttrs(a map[string]string) {
	if s.Init {
		a[AttrInit] = boolean(true)
	}
	if r := s.Resources; r != nil {
		if r.Memory > 0 {
			a[AttrResourcesMemory] = num64(r.Memory)
		}
		if r.CPUs > 0 {
			a[AttrResourcesCPUs] = strconv.FormatFloat(r.CPUs, 'f', -1, 64)
		}
	}
	if l := s.Log; l != nil {
		if l.MaxSize != "" {
			a[AttrLogMaxSize] = str(l.MaxSize)
		}
		if l.MaxFiles > 0 {
			a[AttrLogMaxFiles] = num(l.MaxFiles)
		}
	}
}

func str(v string) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func num(n int) string { return strconv.Itoa(n) }

func num64(n int64) string { return strconv.FormatInt(n, 10) }

func boolean(b bool) string { return strconv.FormatBool(b) }

func list(l []string) string {
	b, _ := json.Marshal(l)
	return string(b)
}

func ints(l []int) string {
	b, _ := json.Marshal(l)
	return string(b)
}

func dur(d time.Duration) string {
	return str(d.String())
}
