package config

import "time"

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
	DefaultConsistency    = "pause"
	DefaultBackupKeep     = 7
	DefaultCutover        = "restart"
	DefaultDrain          = 10 * time.Second
	DefaultStopTimeout    = 10 * time.Second
	DefaultAutoRollback   = true
	DefaultKeepReleases   = 5
	DefaultStoreName      = "default"
	DefaultStoreDirectory = ".deployer/backups"
	DefaultQuickCheck     = true
)

// Values the language accepts for its enumerations.
var (
	CutoverModes    = []string{"proxy", "restart"}
	Consistencies   = []string{"pause", "none"}
	Protocols       = []string{"http", "tcp"}
	NotifyKinds     = []string{"slack", "webhook"}
	NotifyEvents    = []string{"started", "succeeded", "failed", "rolled_back"}
	HookPoints      = []string{"before_cutover"}
	StoreKinds      = []string{"s3", "local"}
	DefaultNotifyOn = NotifyEvents
)

// Defaults fills in every value the operator left out. hclspec calls it once after decoding; values
// that were set explicitly are never changed. A zero duration or count means "not set" here, because
// the language rejects zero for all of them.
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
		if s.Build != nil {
			if s.Build.Context == "" {
				s.Build.Context = DefaultBuildContext
			}
			if s.Build.Dockerfile == "" {
				s.Build.Dockerfile = DefaultDockerfile
			}
		}
		if s.Env == nil {
			s.Env = map[string]string{}
		}
		for _, port := range s.Ports {
			if port.Protocol == "" {
				port.Protocol = DefaultProtocol
			}
		}
		if s.HealthCheck == nil && s.HTTPPort() != nil {
			s.HealthCheck = &HealthCheck{}
		}
		if h := s.HealthCheck; h != nil {
			if h.Path == "" {
				h.Path = DefaultHealthPath
			}
			if h.Interval == 0 {
				h.Interval = DefaultHealthInterval
			}
			if h.Timeout == 0 {
				h.Timeout = DefaultHealthTimeout
			}
			if h.Healthy == 0 {
				h.Healthy = DefaultHealthy
			}
			if h.Deadline == 0 {
				h.Deadline = DefaultHealthDeadline
			}
		}
		if b := s.Backup; b != nil {
			if b.Consistency == "" {
				b.Consistency = DefaultConsistency
			}
			if b.Keep == 0 {
				b.Keep = DefaultBackupKeep
			}
			if b.Store == "" {
				b.Store = DefaultStoreName
				if p.Stores[DefaultStoreName] == nil {
					p.Stores[DefaultStoreName] = &Store{Name: DefaultStoreName, Kind: "local", Directory: DefaultStoreDirectory}
				}
			}
		}
		d := &s.Deploy
		if d.Cutover == "" {
			d.Cutover = DefaultCutover
		}
		if d.Drain == 0 {
			d.Drain = DefaultDrain
		}
		if d.StopTimeout == 0 {
			d.StopTimeout = DefaultStopTimeout
		}
		if d.KeepReleases == 0 {
			d.KeepReleases = DefaultKeepReleases
		}
	}
	for _, st := range p.Stores {
		if st.Kind == "local" && st.Directory == "" {
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
