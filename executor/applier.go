package executor

import (
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/probe"
)

// Applier carries out plans, rollbacks, backups and restores against one engine. It is only
// their configuration: each of them is a run of its own (run.go), so nothing of one carries
// over to the next.
type Applier struct {
	Project *config.Project
	Runtime Runtime
	// Events receives every event, in order, from one goroutine at a time.
	Events func(Event)
	// Holder says who runs this apply, for the lock ("ci@runner-7 pid 4242").
	Holder      string
	LockTimeout time.Duration
	// Source is recorded on new releases (a git commit when known).
	Source string
	// ProbeHost is where published ports are reached: 127.0.0.1 for a local engine.
	ProbeHost string
	// Version is the deployer's version, recorded in backup manifests.
	Version string
	// SelfBinary is the deployer's own static Linux binary, from which the helper image for
	// restores is built (FROM scratch: no registry).
	SelfBinary string
	// HelperMemory caps, in bytes, the memory of the migration's helper containers (the clone,
	// the schema reads, the safety copy and its put-back); 0: no cap. They stream, so a cap far
	// below the database's size holds.
	HelperMemory int64
	// TempDir holds backup spools and downloads; os.TempDir() when empty.
	TempDir string
	// IdentityFile is the age identity that decrypts encrypted backups, for verify and restore.
	IdentityFile string
	// Crash, when set, is called at every kill point (KillPoints): the start of each step and
	// the points inside the cutover, the clean-up and an upgrade of the proxy. Crash tests stop
	// the deployer there: cmd/deployer kills itself with SIGKILL, the in-memory engine's tests
	// freeze the engine. Nil in normal use.
	Crash func(point string)
	// Remote: the engine's published ports are not reached at ProbeHost from here (an engine
	// block's engine, which may be in another network though its socket is a local file): the
	// checks run from its proxy.
	Remote bool

	// Set by a Fleet for each engine: its name, the rollouts of the services that run on
	// several engines, the other engines (images move between them), and the deploy lock,
	// which the fleet takes on every engine before any engine starts.
	engine   string
	rollouts map[string]*rollout
	peers    map[string]Runtime
	locked   bool
}

// ServiceOutcome is what apply did to one service.
type ServiceOutcome struct {
	Service      string      `json:"service"`
	Engine       string      `json:"engine,omitempty"` // as Event.Engine
	Action       plan.Action `json:"action"`
	Release      int         `json:"release,omitempty"` // live after apply
	ImageID      string      `json:"image_id,omitempty"`
	Seconds      float64     `json:"seconds"`
	RolledBack   bool        `json:"rolled_back,omitempty"`
	RolledBackTo int         `json:"rolled_back_to,omitempty"`
	Error        string      `json:"error,omitempty"`
	// Migration is what the service's migration did; Smoke the smoke load's figures.
	Migration *MigrationReport  `json:"migration,omitempty"`
	Smoke     *probe.LoadResult `json:"smoke,omitempty"`
}

// Outcome is what apply did.
type Outcome struct {
	Services []*ServiceOutcome `json:"services"`
}

// Failed reports whether any service failed or was rolled back.
func (o *Outcome) Failed() bool {
	for _, s := range o.Services {
		if s.Error != "" {
			return true
		}
	}
	return false
}

// Names and timings of the sequence.
const (
	// hookTimeout bounds one hook (a migration may take long, but not forever).
	hookTimeout = 30 * time.Minute
	// settle is how long a service without a health check must keep running to pass.
	settle   = 2 * time.Second
	logLines = 20
)

func (a *Applier) probeHost() string {
	if a.ProbeHost != "" {
		return a.ProbeHost
	}
	return "127.0.0.1"
}
