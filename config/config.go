// Package config holds the desired state of a project as plain Go values: what the operator declared,
// with defaults applied in one place (Defaults) and semantic checks (Validate). It knows neither HCL
// nor Docker; hclspec fills it in and executor acts on it.
package config

import (
	"sort"
	"time"
)

// Cutover is how a new release takes over from the live one.
type Cutover string

const (
	CutoverProxy   Cutover = "proxy"   // the project's proxy switches routes: no window
	CutoverRestart Cutover = "restart" // stop the live release, start the new one: a window
)

// Consistency is how a volume's files are read for a backup.
type Consistency string

const (
	ConsistencyPause Consistency = "pause" // the live release is paused while they are copied
	ConsistencyNone  Consistency = "none"  // read as they are
)

// StoreKind is where a backup store keeps backups.
type StoreKind string

const (
	StoreS3    StoreKind = "s3"
	StoreLocal StoreKind = "local"
)

// NotifyKind is how a notice is sent.
type NotifyKind string

const (
	NotifySlack   NotifyKind = "slack"
	NotifyWebhook NotifyKind = "webhook"
)

// Pos is a position in a configuration file; lines and columns count from 1.
type Pos struct {
	Line, Column, Byte int
}

// Range is the source of a value, so an error can point at it.
type Range struct {
	Filename   string
	Start, End Pos
}

// Project is a whole configuration: every service deployed together under one name.
type Project struct {
	Name      string
	NameRange Range
	Dir       string   // the configuration directory; relative paths resolve against it
	Files     []string // the files read, in order

	Docker Docker
	// Engines are the engine blocks, by name: the Docker engines services may run on beside
	// the project's own (docker { host }), which plans and output call "default".
	Engines    map[string]*Engine
	Registries map[string]*Registry // by host
	Stores     map[string]*Store
	Services   []*Service // sorted by name
	Notifies   []*Notify
	Variables  []*Variable

	// Sensitive holds the attribute paths (as Service.Attributes names them, prefixed by
	// "service.NAME.", or "notify.KIND.NAME.url") whose values derive from a sensitive value; a
	// command's sensitive words are also recorded each, as ElemAttr(path, i).
	Sensitive map[string]bool
	// Unknown holds the attribute paths (named as Sensitive's) whose values are not known:
	// validate loads a configuration without the values of its required variables, and every
	// value computed from one is unknown. Such an attribute keeps its default; the checks that
	// need its value skip it (Known).
	Unknown map[string]bool
	// Secrets is the text of the secrets themselves: the values of sensitive variables, of the
	// environment variables read, of credential files read. Every text the deployer shows is
	// masked for them (a text that holds one is masked too). Never printed.
	Secrets []string
	// Derived is the text of every value computed from a secret where secrets are allowed (an
	// env value, a command's word). The configuration chooses these texts, so the deployer's
	// own words are not searched for them (that would tell which words they are): its plans show
	// those attributes as (sensitive) by their path (Sensitive). Only text that comes from outside
	// the deployer (an app's or a command's output, an engine's error) is masked for them too.
	Derived []string
}

// Variable is an input variable after its value was resolved; the value itself stays in hclspec.
type Variable struct {
	Name        string
	Description string
	Sensitive   bool
	Source      string // where the value came from: default, env, file name, -var
}

// Docker says which engine to talk to. An empty Host means DOCKER_HOST, then the local socket.
type Docker struct {
	Host      string
	HostRange Range
	// ProxyImage is an image of the deployer (its binary FROM scratch, entrypoint /deployer)
	// that the proxy and restores run in. Empty: the deployer builds one from its own binary,
	// which it can only do when that binary runs on the engine's OS and architecture.
	ProxyImage      string
	ProxyImageRange Range
}

// DefaultEngine names the project's own engine (the docker block's) among the engine blocks'.
const DefaultEngine = "default"

// Engine is one Docker engine that services may run on: host takes every form docker.host
// does (unix://, tcp://, ssh://, npipe://); TLS gives it its own client certificate.
type Engine struct {
	Name      string
	Host      string
	TLS       *EngineTLS
	DeclRange Range
	Ranges    map[string]Range // "host", "tls.ca", "tls.cert", "tls.key"
}

// EngineTLS is the TLS material of one engine: file paths, relative to the configuration's
// directory.
type EngineTLS struct {
	CA, Cert, Key string
}

// Registry holds the credentials for pulling images from one registry host; without a block,
// the deployer uses what `docker pull` would use on its machine (the docker CLI's config).
type Registry struct {
	Host      string // as image references name it: "ghcr.io", "registry.example.com:5000"
	Username  string
	Password  string // from a sensitive variable
	DeclRange Range
	Ranges    map[string]Range
}

// Store is a backup destination.
type Store struct {
	Name      string
	Kind      StoreKind
	Bucket    string
	Prefix    string
	Region    string
	Endpoint  string
	PathStyle bool
	Directory string // local stores
	// AgeRecipients encrypt every archive and the logs on the deployer's side ("age1...").
	AgeRecipients []string
	// SigningKey authenticates manifests (HMAC-SHA256); it comes from a sensitive variable.
	SigningKey string
	// SSE and KMSKeyID are S3 server-side encryption, passed through to the bucket.
	SSE       string // "", "AES256" or "aws:kms"
	KMSKeyID  string
	DeclRange Range
	// Ranges of attributes, for semantic errors.
	Ranges map[string]Range
}

// Service is one blue-green deployed container.
type Service struct {
	Name          string
	ContainerName string
	Image         string
	Build         *Build
	Command       []string
	Env           map[string]string
	Ports         []*Port
	Volumes       []*Volume
	HealthCheck   *HealthCheck
	Canaries      []*Canary
	SQLite        []*SQLite
	Backup        *Backup
	Hooks         []*Hook
	// Migration changes a database's schema for the new release; Smoke loads the candidate
	// before the cutover. Both nil when not declared.
	Migration *Migration
	Smoke     *Smoke
	Deploy    Deploy
	// Init runs the engine's init process as PID 1: it forwards signals to the app and reaps
	// zombies, so that an app started from a shell script stops on SIGTERM.
	Init      bool
	Resources *Resources
	Log       *Log
	// Engines are the engines the service runs on, by name, in the order written; empty: the
	// project's own engine (DefaultEngine). Rollout says how they switch to a new release.
	Engines []string
	Rollout Rollout

	DeclRange Range
	// Ranges of individual attributes, for semantic errors; keyed like Attributes.
	Ranges map[string]Range
}

// Rollout is how a service on several engines switches: Batch engines at a time (or
// BatchPercent of them, rounded up), each batch checked for Wait before the next switches.
type Rollout struct {
	Batch        int
	BatchPercent int
	Wait         time.Duration
}

// BatchSize is how many of n engines switch together.
func (r Rollout) BatchSize(n int) int {
	size := r.Batch
	if r.BatchPercent > 0 {
		size = (n*r.BatchPercent + 99) / 100
	}
	return max(1, min(size, n))
}

// EngineNames are the engines a service runs on: the ones it lists, else the default one.
func (s *Service) EngineNames() []string {
	if len(s.Engines) == 0 {
		return []string{DefaultEngine}
	}
	return s.Engines
}

// Resources limit what a release may use.
type Resources struct {
	Memory int64   // bytes; 0: no limit
	CPUs   float64 // 0: no limit
}

// Log bounds the engine's json-file log of a release.
type Log struct {
	MaxSize  string // "10m": the engine's size form
	MaxFiles int
}

// Build builds the service image locally before a deploy.
type Build struct {
	Context    string // relative to the project directory
	Dockerfile string // relative to Context
	Args       map[string]string
	Before     []string // a local command run first, in the project directory
}

// Port publishes a container port.
type Port struct {
	Container int
	Host      int
	Candidate int    // 0: the engine picks a free port on 127.0.0.1
	Protocol  string // "http" or "tcp"
}

// Volume is a named Docker volume mounted into the service.
type Volume struct {
	Name   string
	Target string
	// Shared lets other projects on the engine mount the volume too, when they declare it
	// shared as well; otherwise a volume another project uses or made is refused.
	Shared bool
}

// HealthCheck decides when a candidate or a new live release is healthy.
type HealthCheck struct {
	Path     string
	Status   []int // empty: any 2xx
	Interval time.Duration
	Timeout  time.Duration
	Healthy  int
	Deadline time.Duration
}

// Canary is an extra HTTP check of the candidate before cutover.
type Canary struct {
	Name         string
	Path         string
	Status       []int
	BodyContains string
}

// SQLite declares a database file inside a volume.
type SQLite struct {
	Name        string
	Volume      string
	Path        string
	QuickCheck  bool
	SeedIfEmpty []string
}

// Backup is the service's backup policy, run right before cutover.
type Backup struct {
	Store       string
	Volumes     []string
	Consistency Consistency // the default for every volume
	// VolumeConsistency overrides Consistency for some volumes (volume "NAME" blocks). Either
	// way it covers a volume's files other than its declared SQLite databases, which are
	// always snapshotted online.
	VolumeConsistency map[string]Consistency
	Keep              int
	Logs              bool
}

// ConsistencyOf is how the files of a backed-up volume are read.
func (b *Backup) ConsistencyOf(volume string) Consistency {
	if c, ok := b.VolumeConsistency[volume]; ok {
		return c
	}
	return b.Consistency
}

// Hook is a one-off container of the new image run at a point of the deploy.
type Hook struct {
	When    string // "before_cutover"
	Command []string
}

// Migration is a schema change that a release brings: a command run in a one-off container of
// the new image, first on a copy of the database (the dry-run), then on the live data.
type Migration struct {
	Command []string
	SQLite  string // the name of the sqlite block it changes
	// Deadline bounds each run of the command.
	Deadline time.Duration
	// DryRun runs the command on a clone of the database's volume first and diffs the schemas;
	// without it nothing is known of the change, which counts as destructive.
	DryRun bool
	// AllowDestructive lets a change that would break the live release go ahead, held: the live
	// release never runs on the new schema.
	AllowDestructive bool
	// HoldTimeout bounds how long new requests are held during a destructive migration.
	HoldTimeout time.Duration
}

// Smoke is a short load against the candidate before cutover: Requests requests (or as many
// as Duration allows), Concurrency at once, spread over Paths; it fails above MaxErrorRate
// failed requests or a p95 latency above P95.
type Smoke struct {
	Requests     int
	Duration     time.Duration
	Concurrency  int
	Paths        []string
	MaxErrorRate float64
	P95          time.Duration
}

// Deploy holds how the cutover is made.
type Deploy struct {
	Cutover      Cutover
	Drain        time.Duration
	StopTimeout  time.Duration
	AutoRollback bool
	KeepReleases int
}

// Notify sends deploy notices.
type Notify struct {
	Kind      NotifyKind
	Name      string
	URL       string
	On        []string
	DeclRange Range
}

// Service returns the service with the given name, or nil.
func (p *Project) Service(name string) *Service {
	// Services are sorted by name (SortServices), so a lookup is a binary search.
	i := sort.Search(len(p.Services), func(i int) bool { return p.Services[i].Name >= name })
	if i < len(p.Services) && p.Services[i].Name == name {
		return p.Services[i]
	}
	return nil
}

// SortServices orders services by name, so plans and hashes do not depend on file order and
// Service can search.
func (p *Project) SortServices() {
	sort.SliceStable(p.Services, func(i, j int) bool { return p.Services[i].Name < p.Services[j].Name })
}

// MinSecret is the length of the shortest sensitive value: a shorter one is no secret worth the
// name, and masking it wherever its text appears would mangle ordinary words and numbers ("ok",
// "1", "on"), so the loader refuses it (naming the variable or attribute, never the value)
// rather than show it, and output is masked for values of this length and more. The empty
// value, an optional secret not set, is allowed: there is nothing to show.
const MinSecret = 4

// Known reports whether the value at an attribute path (as Sensitive names them) is known.
func (p *Project) Known(path string) bool { return !p.Unknown[path] }

// IsSensitive reports whether the attribute path of a service derives from a sensitive value.
func (p *Project) IsSensitive(service, attr string) bool {
	return p.Sensitive["service."+service+"."+attr]
}

// IsSensitiveElem reports whether word i of a service's command attribute (command, build.before,
// a hook's or a migration's command, seed_if_empty) derives from a sensitive value.
func (p *Project) IsSensitiveElem(service, attr string, i int) bool {
	return p.Sensitive["service."+service+"."+ElemAttr(attr, i)]
}
