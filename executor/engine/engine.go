// Package engine is the deployer's port to a container engine: the values it reads from one
// and the calls it makes to one. executor/docker implements it for Docker, memengine in memory
// for fast tests; the executor depends on nothing else of an engine. It also names the labels
// the deployer keeps its state in, since that state lives on the engine.
package engine

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"
)

// Labels the deployer writes on everything it creates. What runs is read back from them: there is
// no state file.
const (
	LabelProject     = "deployer.project"
	LabelService     = "deployer.service"
	LabelRole        = "deployer.role"
	LabelRelease     = "deployer.release"
	LabelSpec        = "deployer.spec"         // hash of the normalized spec and the image ID
	LabelSpecDoc     = "deployer.spec-doc"     // the normalized spec, sensitive values hashed
	LabelContextHash = "deployer.context-hash" // content hash of the build context, when built
	LabelCreatedAt   = "deployer.created-at"
	LabelSource      = "deployer.source"
	LabelHolder      = "deployer.holder" // on the lock: who holds it
	LabelImage       = "deployer.image"  // the image reference (containers are created by ID)
	// LabelLiveName is the service's live container name. The container that bears it is the
	// live release whatever role it was created with: in proxy mode the candidate itself becomes
	// live by being renamed, since labels cannot change.
	LabelLiveName = "deployer.live-name"
	// LabelAddress is the fixed address a release was given on the project's network.
	LabelAddress = "deployer.address"
	// LabelImageOrigin says who made a release's image: built or pulled by the deployer, or
	// found on the engine. Pruning removes only the images the deployer made.
	LabelImageOrigin = "deployer.image-origin"
	// LabelEngines records, on a release of a configuration with engine blocks, the engines
	// its service was deployed to (JSON: name -> address), so that a later plan can name an
	// engine the configuration no longer declares.
	LabelEngines = "deployer.engines"
	// LabelKey holds a project's random key (hex), on the volume that keeps it.
	LabelKey = "deployer.key"
	// LabelImageProject and LabelImageService are on the images the deployer builds: whose
	// they are. Not deployer.project and deployer.service, which every container run from an
	// image inherits: an operator's `docker run` of a service's image is not one of its
	// releases. (Images built before 2026-12 carry those; they are read as well.)
	LabelImageProject = "deployer.image-project"
	LabelImageService = "deployer.image-service"
	// LabelTakeoverOf is on a release that replaces a container made without the deployer:
	// that container's ID. A cutover interrupted after it set the container aside under
	// <name>-old-N is finished by the next apply for that container only.
	LabelTakeoverOf = "deployer.takeover-of"
	// LabelFixedRange marks a network made with a range of fixed addresses: the deployer gives
	// each release one, which it keeps when it restarts (a host reboot), so the proxy's saved
	// routes stay right. The engine hands out the other half of the subnet to whatever else joins.
	LabelFixedRange = "deployer.fixed-range"
)

// MaxRelease is the highest release number the deployer gives or reads: a release label
// beyond it, or one that is not a plain positive number, is no release of the deployer's.
const MaxRelease = 1_000_000_000

// ErrNotFound is returned by an Engine for an image or container that does not exist.
var ErrNotFound = errors.New("not found")

// Container is what the engine reports of one labelled container.
type Container struct {
	ID      string
	Name    string
	Image   string // the reference it was created from
	ImageID string
	State   string // created, running, paused, restarting, exited, dead
	Status  string // the engine's human wording, e.g. "Up 3 minutes"
	Labels  map[string]string
	Created time.Time
	// Published are the host ports a running container holds.
	Published []Published
	// Mounts are the names of the volumes it mounts, running or not: who uses a volume.
	Mounts []string
}

// Published is a host port a container publishes.
type Published struct {
	HostIP   string // "" or 0.0.0.0 for every address
	HostPort int
}

func (c *Container) Role() string { return c.Labels[LabelRole] }

// ImageRef is the image reference the release was deployed from.
func (c *Container) ImageRef() string {
	if ref := c.Labels[LabelImage]; ref != "" {
		return ref
	}
	return c.Image
}
func (c *Container) Service() string { return c.Labels[LabelService] }
func (c *Container) Running() bool   { return c.State == "running" || c.State == "restarting" }

// Release is the container's release number, 0 when it has none (or one that is not a
// release number: ParseRelease).
func (c *Container) Release() int {
	n, _ := ParseRelease(c.Labels[LabelRelease])
	return n
}

// ParseRelease reads a release label strictly: decimal digits without a leading zero, from 1
// to MaxRelease. Anything else (a sign, spaces, 20 digits) is not a release.
func ParseRelease(s string) (int, bool) {
	if s == "" || len(s) > 10 || s[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxRelease {
		return 0, false
	}
	return n, true
}

// Engine is what planning needs of a Docker engine.
type Engine interface {
	// Host names the engine for messages, e.g. unix:///var/run/docker.sock.
	Host() string
	// Ping fails when the engine does not answer.
	Ping(ctx context.Context) error
	// Containers lists every container labelled with the project, in one call.
	Containers(ctx context.Context, project string) ([]Container, error)
	// AllContainers lists every container on the engine, the deployer's or not, with the ports
	// they publish: what may hold a port the project needs.
	AllContainers(ctx context.Context) ([]Container, error)
	// ImageID resolves a local image reference; ErrNotFound when the engine does not have it.
	ImageID(ctx context.Context, ref string) (string, error)
	// ProjectKey is the project's random key for hashing sensitive values, made on first use
	// and kept on the engine (never in a plan file).
	ProjectKey(ctx context.Context, project string) ([]byte, error)
	// ReadProjectKey is the project's key when it has one, nil (and no error) when it has none
	// yet: what a plan reads, since a plan makes nothing on the engine.
	ReadProjectKey(ctx context.Context, project string) ([]byte, error)
	// Inspect reports a container (by ID or name); ErrNotFound when there is none.
	Inspect(ctx context.Context, id string) (*ContainerState, error)
	// ImageEnv is the environment an image sets, which every container of it has.
	ImageEnv(ctx context.Context, image string) (map[string]string, error)
	// Volumes lists the volumes labelled with the project: those the deployer made for itself
	// (a backup's scratch space, the key's), and the services' volumes it created (role "data":
	// never scratch); a service's volume made otherwise (by an earlier version, by docker run)
	// carries no labels of the deployer's.
	Volumes(ctx context.Context, project string) ([]Volume, error)
	// InspectVolume reports a volume by name, with its labels (none for one made by mounting
	// it); ErrNotFound when there is none.
	InspectVolume(ctx context.Context, name string) (*Volume, error)
	// NetworkLabels are a network's labels; ErrNotFound when there is none of that name.
	NetworkLabels(ctx context.Context, name string) (map[string]string, error)
	// ImageLabels are a local image's labels; ErrNotFound when the engine does not have it.
	ImageLabels(ctx context.Context, ref string) (map[string]string, error)
}

// Volume is a volume the deployer made, with its labels.
type Volume struct {
	Name   string
	Labels map[string]string
}

// Runtime is what apply needs of a Docker engine, on top of what planning needs.
type Runtime interface {
	Engine
	BuildImage(ctx context.Context, o BuildOptions) (string, error)
	// PullImage pulls an image with the credentials the registries hold (by host), else those
	// `docker pull` would use on this machine.
	PullImage(ctx context.Context, ref string, registries map[string]RegistryAuth, log io.Writer) (string, error)
	// EnsureLockImage makes sure the image that lock containers are created from exists.
	EnsureLockImage(ctx context.Context) (string, error)
	RemoveImage(ctx context.Context, id string) error
	// SaveImage streams an image (by reference, so that its tag goes along) as the engine's
	// image archive; LoadImage loads such an archive: together they move an image between
	// engines without a registry.
	SaveImage(ctx context.Context, ref string) (io.ReadCloser, error)
	LoadImage(ctx context.Context, archive io.Reader) error
	CreateContainer(ctx context.Context, s ContainerSpec) (string, error)
	StartContainer(ctx context.Context, id string) error
	StopContainer(ctx context.Context, id string, timeout time.Duration) error
	RemoveContainer(ctx context.Context, id string) error
	RenameContainer(ctx context.Context, id, name string) error
	Logs(ctx context.Context, id string, lines int) (string, error)
	Wait(ctx context.Context, id string) (int, error)
	// The copy API, pause and logs, for backups and SQLite checks.
	CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error)
	CopyTo(ctx context.Context, id, dir string, tar io.Reader) error
	Pause(ctx context.Context, id string) error
	Unpause(ctx context.Context, id string) error
	LogStream(ctx context.Context, id string) (io.ReadCloser, error)
	// CreateVolume makes a volume for the deployer's own use, with labels that Volumes finds;
	// one that exists with those labels is kept as it is, and one that exists without them (not
	// the deployer's to use) is ErrNameTaken.
	CreateVolume(ctx context.Context, name string, labels map[string]string) error
	// RemoveVolume removes a volume the deployer made for itself (a backup's scratch space);
	// never a service's. A volume that does not exist is not an error.
	RemoveVolume(ctx context.Context, name string) error
	// Networks lists the names of the networks labelled with the project.
	Networks(ctx context.Context, project string) ([]string, error)
	// RemoveNetwork removes a network; one that does not exist is not an error, one that
	// containers are still connected to is.
	RemoveNetwork(ctx context.Context, name string) error
	// RemoveProjectKey removes the project's key (ProjectKey makes a new one on next use).
	RemoveProjectKey(ctx context.Context, project string) error
	// Networks, exec and restart policies, for the proxy. EnsureNetwork returns the
	// network's fixed-address range (see NetworkPlan); an empty one when the network was made
	// without (by an earlier version), and its containers get addresses from the engine. A
	// network of that name without those labels is not the deployer's to join: ErrNameTaken.
	EnsureNetwork(ctx context.Context, name string, labels map[string]string) (fixed string, err error)
	Exec(ctx context.Context, id string, cmd []string) (stdout string, exitCode int, err error)
	// ExecSession runs a command in a running container with its stdin and stdout kept open:
	// writes go to its stdin, reads come from its stdout, until Close (which ends its stdin).
	// Reads end (an error naming what it wrote on stderr) once the command has exited.
	ExecSession(ctx context.Context, id string, cmd []string) (io.ReadWriteCloser, error)
	SetRestart(ctx context.Context, id, policy string) error
	// NetworkAddresses lists the addresses of the containers connected to a network now
	// (address -> container name), whoever connected them: what a fixed address must avoid.
	// ErrNotFound when there is no network of that name.
	NetworkAddresses(ctx context.Context, name string) (map[string]string, error)
	// ImageContent reports what an image is made of (by reference or ID): its layers' content
	// digests and the configuration its containers start with. ErrNotFound when the engine
	// does not have it. A tag can be moved by anyone: the deployer checks the content of the
	// images it runs as its own helpers.
	ImageContent(ctx context.Context, ref string) (*ImageContent, error)
	// Platform is the engine's OS and architecture, as Go names them ("linux", "amd64").
	Platform(ctx context.Context) (os, arch string, err error)
}

// ImageContent is what an image is made of. Layers are the digests of the layers' uncompressed
// content (diff IDs), which the engine computes itself: two images with the same layers and
// configuration run the same.
type ImageContent struct {
	ID         string
	Layers     []string
	OS, Arch   string
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Volumes    []string
	Labels     map[string]string
	// Other is set when the configuration holds anything else a container would start with
	// (a health check, on-build triggers, a stop signal, a shell): such an image is no helper
	// of the deployer's.
	Other bool
}

// RegistryAuth is what a registry block gives to pull with.
type RegistryAuth struct {
	Username, Password string
}

// ErrNameTaken is returned by CreateContainer when a container of that name exists already, and
// by CreateVolume and EnsureNetwork for a volume or network of that name made for something else.
var ErrNameTaken = errors.New("name taken")

// BuildOptions describe one image build.
type BuildOptions struct {
	Dir        string // the context directory
	Dockerfile string // relative to Dir
	Tag        string
	Args       map[string]string
	Labels     map[string]string
	Log        io.Writer // the builder's output, line by line; may be nil
}

// ContainerSpec is what the deployer creates a container from.
type ContainerSpec struct {
	Name    string
	Image   string
	Cmd     []string
	Env     map[string]string
	Labels  map[string]string
	Ports   []PortBinding
	Volumes []VolumeMount
	// Restart is the engine's restart policy: "" (none) or "unless-stopped" for live releases, so
	// that a host reboot brings the service back without the deployer.
	Restart string
	// Network is a user-defined network to join, at the address IP if not empty; HostNetwork
	// uses the host's (the proxy); NoNetwork gives the container none at all (a helper that only
	// reads volumes).
	Network     string
	IP          string
	HostNetwork bool
	NoNetwork   bool
	// Init runs the engine's init as PID 1; Memory (bytes) and NanoCPUs limit resources (0: no
	// limit); LogOpts are the json-file log driver's options (max-size, max-file).
	Init     bool
	Memory   int64
	NanoCPUs int64
	LogOpts  map[string]string
}

// PortBinding publishes a container port on the host.
type PortBinding struct {
	Container int
	HostIP    string // "" for all interfaces
	HostPort  int    // 0: the engine picks a free port
}

// VolumeMount mounts a named volume.
type VolumeMount struct {
	Name   string
	Target string
}

// ContainerState is what inspect tells of one container, including what is needed to create it
// again (labels cannot change on a container, so a change of role means a new container).
type ContainerState struct {
	ID       string
	Name     string
	Running  bool
	Status   string
	ExitCode int
	Error    string
	OOM      bool
	Restarts int         // restarts by the engine's restart policy: a crash it hid
	Ports    map[int]int // container port -> published host port
	ImageID  string
	Spec     ContainerSpec
	IPs      map[string]string // network name -> address
	// Binds are the host directories bind-mounted into the container (Name: the host path).
	Binds []VolumeMount
}
