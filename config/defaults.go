package config

import (
	"strconv"
	"strings"
	"time"
)

// The defaults, written once. Defaults applies them; plan shows the ones that matter.
const (
	DefaultBuildContext   = "."
	DefaultDockerfile     = "Dockerfile"
	DefaultProtocol       = "http"
	DefaultHealthPath     = "/"
	DefaultHealthInterval = time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthy        = 2
	DefaultHealthDeadline = 60 * time.Second
	DefaultConsistency    = ConsistencyPause
	DefaultBackupKeep     = 7
	DefaultCutover        = CutoverRestart
	DefaultDrain          = 10 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultAutoRollback   = true
	DefaultKeepReleases   = 5
	DefaultStoreName      = "default"
	DefaultStoreDirectory = ".deployer/backups"
	DefaultQuickCheck     = true

	DefaultMigrationDeadline = 5 * time.Minute
	DefaultMigrationDryRun   = true
	DefaultHoldTimeout       = 30 * time.Second
	DefaultSmokeRequests     = 200
	DefaultSmokeConcurrency  = 4
	DefaultSmokePath         = "/"
	DefaultSmokeErrorRate    = 0.0
	DefaultSmokeP95          = time.Second

	// The smoke load's bounds: a configuration from a pull request cannot ask for more.
	// A service on several engines switches one engine at a time, each checked by its
	// verify step only, unless rollout says otherwise.
	DefaultRolloutBatch = 1
	MaxRolloutWait      = time.Hour

	MaxSmokeRequests    = 100000
	MaxSmokeDuration    = 10 * time.Minute
	MaxSmokeConcurrency = 256
)

// Values the language accepts for its enumerations.
var (
	CutoverModes    = []Cutover{CutoverProxy, CutoverRestart}
	Consistencies   = []Consistency{ConsistencyPause, ConsistencyNone}
	Protocols       = []string{"http", "tcp"}
	NotifyKinds     = []NotifyKind{NotifySlack, NotifyWebhook}
	NotifyEvents    = []string{"started", "succeeded", "failed", "rolled_back"}
	HookPoints      = []string{"before_cutover"}
	StoreKinds      = []StoreKind{StoreS3, StoreLocal}
	SSEModes        = []string{"AES256", "aws:kms"}
	DefaultNotifyOn = NotifyEvents
)

// The constructors return blocks with every default set; the decoder overwrites what the operator
// wrote, so an explicit value, even an invalid zero, is never mistaken for "not set".

// NewService returns a service with its block-independent defaults.
func NewService(name string) *Service {
	return &Service{Name: name, Env: map[string]string{}, Deploy: NewDeploy(), Rollout: Rollout{Batch: DefaultRolloutBatch}, Ranges: map[string]Range{}}
}

// NewBuild returns a build block with its defaults.
func NewBuild() *Build {
	return &Build{Context: DefaultBuildContext, Dockerfile: DefaultDockerfile}
}

// NewPort returns a port block with its defaults.
func NewPort() *Port { return &Port{Protocol: DefaultProtocol} }

// NewHealthCheck returns a health check with its defaults.
func NewHealthCheck() *HealthCheck {
	return &HealthCheck{Path: DefaultHealthPath, Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout,
		Healthy: DefaultHealthy, Deadline: DefaultHealthDeadline}
}

// NewSQLite returns an sqlite block with its defaults.
func NewSQLite(name string) *SQLite { return &SQLite{Name: name, QuickCheck: DefaultQuickCheck} }

// NewMigration returns a migration block with its defaults.
func NewMigration() *Migration {
	return &Migration{Deadline: DefaultMigrationDeadline, DryRun: DefaultMigrationDryRun, HoldTimeout: DefaultHoldTimeout}
}

// NewSmoke returns a smoke block with its defaults.
func NewSmoke() *Smoke {
	return &Smoke{Requests: DefaultSmokeRequests, Concurrency: DefaultSmokeConcurrency, Paths: []string{DefaultSmokePath},
		MaxErrorRate: DefaultSmokeErrorRate, P95: DefaultSmokeP95}
}

// MigrationDB is the sqlite block a migration changes, or nil.
func (s *Service) MigrationDB() *SQLite {
	if s.Migration == nil {
		return nil
	}
	for _, db := range s.SQLite {
		if db.Name == s.Migration.SQLite {
			return db
		}
	}
	return nil
}

// NewBackup returns a backup policy with its defaults; an empty Store means the embedded local one.
func NewBackup() *Backup { return &Backup{Consistency: DefaultConsistency, Keep: DefaultBackupKeep} }

// NewDeploy returns the deploy settings with their defaults.
func NewDeploy() Deploy {
	return Deploy{Cutover: DefaultCutover, Drain: DefaultDrain, StopTimeout: DefaultStopTimeout,
		AutoRollback: DefaultAutoRollback, KeepReleases: DefaultKeepReleases}
}

// NewStore returns a store; a local store defaults its directory.
func NewStore(name string) *Store { return &Store{Name: name, Ranges: map[string]Range{}} }

// Defaults fills in the defaults that depend on other values: names derived from the project,
// the image tag of a built service, the health check of an HTTP service, the embedded store, the
// events a notice is sent for. hclspec calls it once after decoding.
func Defaults(p *Project) {
	if p.Stores == nil {
		p.Stores = map[string]*Store{}
	}
	if p.Sensitive == nil {
		p.Sensitive = map[string]bool{}
	}
	for _, s := range p.Services {
		if s.ContainerName == "" {
			s.ContainerName = p.Name + "-" + s.Name
		}
		if s.Image == "" && s.Build != nil {
			s.Image = p.Name + "-" + s.Name + ":latest"
		}
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		if s.HealthCheck == nil && s.HTTPPort() != nil {
			s.HealthCheck = NewHealthCheck()
		}
		if m := s.Migration; m != nil && m.SQLite == "" && len(s.SQLite) == 1 {
			m.SQLite = s.SQLite[0].Name // the only database is the one it changes
		}
		if b := s.Backup; b != nil && b.Store == "" {
			b.Store = DefaultStoreName
			if p.Stores[DefaultStoreName] == nil {
				p.Stores[DefaultStoreName] = &Store{Name: DefaultStoreName, Kind: StoreLocal, Directory: DefaultStoreDirectory}
			}
		}
	}
	for _, st := range p.Stores {
		if st.Kind == StoreLocal && st.Directory == "" {
			st.Directory = DefaultStoreDirectory
		}
	}
	for _, n := range p.Notifies {
		if n.On == nil {
			n.On = append([]string(nil), DefaultNotifyOn...)
		}
	}
	p.SortServices()
}

// HTTPPort is the port that health checks and canaries use: the first one speaking HTTP.
func (s *Service) HTTPPort() *Port {
	for _, p := range s.Ports {
		if p.Protocol == "" || p.Protocol == "http" {
			return p
		}
	}
	return nil
}

// Volume returns the service's volume of that name, or nil.
func (s *Service) Volume(name string) *Volume {
	for _, v := range s.Volumes {
		if v.Name == name {
			return v
		}
	}
	return nil
}

// ParseBytes reads a size as the engine's tools write it: a number with an optional unit b, k,
// m, g or t (powers of 1024), as in "512m" or "1.5g".
func ParseBytes(s string) (int64, bool) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"t", 1 << 40}, {"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"b", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.n
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<62 {
		return 0, false
	}
	return int64(f * float64(mult)), true
}
