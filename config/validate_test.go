package config

import (
	"strings"
	"testing"
	"time"
)

// valid is a project every check passes: one service with every kind of block.
func valid() *Project {
	s := NewService("web")
	s.Image = "web:1"
	s.Env = map[string]string{"MODE": "prod"}
	port := NewPort()
	port.Container, port.Host, port.Candidate = 8080, 80, 8081
	s.Ports = []*Port{port}
	s.Volumes = []*Volume{{Name: "data", Target: "/data"}, {Name: "uploads", Target: "/uploads"}}
	s.HealthCheck = NewHealthCheck()
	s.Canaries = []*Canary{{Name: "home", Path: "/"}}
	db := NewSQLite("main")
	db.Volume, db.Path = "data", "app.db"
	s.SQLite = []*SQLite{db}
	s.Backup = NewBackup()
	s.Backup.Volumes = []string{"data"}
	s.Hooks = []*Hook{{When: "before_cutover", Command: []string{"./migrate"}}}
	s.Resources = &Resources{Memory: 64 << 20, CPUs: 1}
	s.Log = &Log{MaxSize: "10m", MaxFiles: 3}
	for _, k := range []string{AttrResourcesMemory, AttrResourcesCPUs, AttrLogMaxFiles} {
		s.Ranges[k] = Range{}
	}
	p := &Project{Name: "shop", Services: []*Service{s}, Sensitive: map[string]bool{}}
	Defaults(p)
	return p
}

// Each semantic check, one by one: the valid project passes, and each change is refused with
// the summary and a detail that says what to do.
func TestValidate(t *testing.T) {
	if errs := Validate(valid()); len(errs) != 0 {
		t.Fatalf("the valid project: %v", errs)
	}
	web := func(p *Project) *Service { return p.Services[0] }
	cases := []struct {
		name, summary, detail string
		mod                   func(p *Project)
	}{
		{"project name", "Invalid project name", "lower-case", func(p *Project) { p.Name = "Shop!" }},
		{"service name", "Invalid service name", "lower-case", func(p *Project) { web(p).Name = "Web" }},
		{"no image", "Missing image", "needs an image", func(p *Project) { web(p).Image = "" }},
		{"image with spaces", "Invalid image", "must not contain spaces", func(p *Project) { web(p).Image = "web 1" }},
		{"env name", "Invalid environment variable name", "not starting with a digit", func(p *Project) { web(p).Env["1X"] = "" }},
		{"host port range", "Invalid port", "out of range", func(p *Project) { web(p).Ports[0].Host = 70000 }},
		{"candidate equals host", "Candidate port equals host port", "needs its own port", func(p *Project) { web(p).Ports[0].Candidate = 80 }},
		{"protocol", "Invalid protocol", `"http", "tcp"`, func(p *Project) {
			port := NewPort()
			port.Container, port.Host, port.Protocol = 53, 53, "udp"
			web(p).Ports = append(web(p).Ports, port)
		}},
		{"volume name", "Invalid volume name", "Docker volume names", func(p *Project) { web(p).Volumes[1].Name = "u" }},
		{"volume target", "Invalid volume target", "absolute path", func(p *Project) { web(p).Volumes[0].Target = "data" }},
		{"two volumes at one target", "Duplicate volume target", "both mount at", func(p *Project) { web(p).Volumes[1].Target = "/data" }},
		{"health check path", "Invalid path", `must start with "/"`, func(p *Project) { web(p).HealthCheck.Path = "health" }},
		{"health check status", "Invalid status", "not an HTTP status", func(p *Project) { web(p).HealthCheck.Status = []int{42} }},
		{"healthy zero", "Invalid healthy count", "at least 1", func(p *Project) { web(p).HealthCheck.Healthy = 0 }},
		{"negative interval", "Invalid duration", "positive duration", func(p *Project) { web(p).HealthCheck.Interval = -time.Second }},
		{"canary name", "Invalid canary name", "letters, digits", func(p *Project) { web(p).Canaries[0].Name = "a.b" }},
		{"sqlite volume", "Unknown volume", "does not mount", func(p *Project) { web(p).SQLite[0].Volume = "logs" }},
		{"sqlite path climbs", "Invalid database path", "relative to the volume", func(p *Project) { web(p).SQLite[0].Path = "../x.db" }},
		{"backup volume", "Unknown volume", "does not mount", func(p *Project) { web(p).Backup.Volumes = []string{"logs"} }},
		{"backup volume twice", "Volume listed twice", "list each volume once", func(p *Project) { web(p).Backup.Volumes = []string{"data", "data"} }},
		{"backup store", "Unknown backup store", "is not declared", func(p *Project) { web(p).Backup.Store = "offsite" }},
		{"consistency", "Invalid consistency", `"pause", "none"`, func(p *Project) { web(p).Backup.Consistency = "freeze" }},
		{"volume consistency", "Invalid consistency", `"pause", "none"`, func(p *Project) { web(p).Backup.VolumeConsistency = map[string]Consistency{"data": "fsfreeze"} }},
		{"consistency of a volume not backed up", "Volume not backed up", "add it to volumes", func(p *Project) { web(p).Backup.VolumeConsistency = map[string]Consistency{"logs": "none"} }},
		{"keep zero", "Invalid keep", "at least 1 backup", func(p *Project) { web(p).Backup.Keep = 0 }},
		{"hook point", "Unknown hook", "before_cutover", func(p *Project) { web(p).Hooks[0].When = "after_cutover" }},
		{"empty hook", "Empty hook command", "needs a command", func(p *Project) { web(p).Hooks[0].Command = nil }},
		{"cutover", "Invalid cutover", `"proxy", "restart"`, func(p *Project) { web(p).Deploy.Cutover = "rolling" }},
		{"keep releases", "Invalid keep_releases", "rollback has a target", func(p *Project) { web(p).Deploy.KeepReleases = 0 }},
		{"memory", "Memory too small", "at least 6m", func(p *Project) { web(p).Resources.Memory = 1024 }},
		{"cpus", "Invalid cpus", "number of CPUs", func(p *Project) { web(p).Resources.CPUs = 0.001 }},
		{"max files", "Invalid max_files", "at least 1 file", func(p *Project) { web(p).Log.MaxFiles = 0 }},
		{"max files without size", "max_files without max_size", "set log.max_size", func(p *Project) { web(p).Log.MaxSize = "" }},
		{"container name twice", "Duplicate container name", "set container_name", func(p *Project) {
			s := NewService("api")
			s.Image, s.ContainerName = "api:1", web(p).ContainerName
			p.Services = append(p.Services, s)
		}},
		{"port used twice", "Port used twice", "used once across all services", func(p *Project) {
			s := NewService("api")
			s.Image = "api:1"
			port := NewPort()
			port.Container, port.Host = 9000, 80
			s.Ports = []*Port{port}
			p.Services = append(p.Services, s)
		}},
		{"store kind", "Unknown store kind", "set bucket", func(p *Project) { p.Stores["x"] = NewStore("x") }},
		{"bucket", "Invalid bucket", "at least 3 characters", func(p *Project) { p.Stores["s3"] = &Store{Name: "s3", Kind: StoreS3, Bucket: "b"} }},
		{"sse", "Invalid sse", `"AES256", "aws:kms"`, func(p *Project) {
			p.Stores["s3"] = &Store{Name: "s3", Kind: StoreS3, Bucket: "bkt", SSE: "AES128", Ranges: map[string]Range{}}
		}},
		{"signing key in clear", "Signing key not sensitive", "sensitive = true", func(p *Project) {
			p.Stores["s3"] = &Store{Name: "s3", Kind: StoreS3, Bucket: "bkt", SigningKey: "0123456789abcdef0", Ranges: map[string]Range{"signing_key": {}}}
		}},
		{"age recipient", "Invalid age recipient", "age1", func(p *Project) {
			p.Stores["s3"] = &Store{Name: "s3", Kind: StoreS3, Bucket: "bkt", AgeRecipients: []string{"ssh-ed25519 AAAA"}}
		}},
		{"registry host", "Invalid registry host", "a dot or a port", func(p *Project) {
			p.Registries = map[string]*Registry{"my registry": {Host: "my registry", Ranges: map[string]Range{}}}
		}},
		{"notify kind", "Unknown notify kind", `"slack", "webhook"`, func(p *Project) {
			p.Notifies = []*Notify{{Kind: "email", Name: "ops", On: NotifyEvents}}
		}},
		{"notify event", "Unknown notify event", "is not an event", func(p *Project) {
			p.Notifies = []*Notify{{Kind: NotifySlack, Name: "ops", On: []string{"deployed"}}}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := valid()
			c.mod(p)
			errs := Validate(p)
			if len(errs) != 1 || errs[0].Summary != c.summary || !strings.Contains(errs[0].Detail, c.detail) {
				t.Errorf("got %v, want one %q containing %q", errs, c.summary, c.detail)
			}
		})
	}
}
