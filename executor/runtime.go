package executor

import (
	"context"
	"errors"
	"io"
	"time"
)

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
	// Networks, exec and restart policies, for the proxy. EnsureNetwork returns the
	// network's fixed-address range (see NetworkPlan); an empty one when the network was made
	// without (by an earlier version), and its containers get addresses from the engine.
	EnsureNetwork(ctx context.Context, name string, labels map[string]string) (fixed string, err error)
	Exec(ctx context.Context, id string, cmd []string) (stdout string, exitCode int, err error)
	SetRestart(ctx context.Context, id, policy string) error
	// Platform is the engine's OS and architecture, as Go names them ("linux", "amd64").
	Platform(ctx context.Context) (os, arch string, err error)
}

// RegistryAuth is what a registry block gives to pull with.
type RegistryAuth struct {
	Username, Password string
}

// ErrNameTaken is returned by CreateContainer when a container of that name exists already.
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
	// uses the host's (the proxy).
	Network     string
	IP          string
	HostNetwork bool
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
