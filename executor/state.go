// Package executor turns a configuration into action: it reads what runs from the Docker engine,
// diffs it against the configuration into a Plan (a value with changes and ordered steps), renders
// plans as text and JSON, and carries plans out. The outside world sits behind narrow interfaces
// whose implementations live in the subpackages (docker, ...). Nothing here prints.
package executor

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
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
)

// Image origins.
const (
	OriginBuilt  = "built"
	OriginPulled = "pulled"
	OriginFound  = "found"
)

// imageOwned reports whether the deployer made a release's image, so that it may remove it with
// the release. Releases from before the origin was recorded: those built from a context were.
func imageOwned(c *Container) bool {
	switch c.Labels[LabelImageOrigin] {
	case OriginBuilt, OriginPulled:
		return true
	case "":
		return c.Labels[LabelContextHash] != ""
	}
	return false
}

// originOf is the origin recorded by a release of the service with that image, "" for none.
func originOf(st *ServiceState, imageID string) string {
	for _, list := range [][]*Container{{st.Live}, st.Previous} {
		for _, c := range list {
			if c != nil && c.ImageID == imageID && imageOwned(c) {
				if o := c.Labels[LabelImageOrigin]; o != "" {
					return o
				}
				return OriginBuilt
			}
		}
	}
	return ""
}

// Roles of containers.
const (
	RoleLive      = "live"
	RoleCandidate = "candidate"
	RolePrevious  = "previous"
	RoleProxy     = "proxy"
	RoleLock      = "lock"
	RoleOneOff    = "oneoff" // hooks and seeds: never serve
)

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

// Release is the container's release number, 0 when it has none.
func (c *Container) Release() int {
	n, _ := strconv.Atoi(c.Labels[LabelRelease])
	return n
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
	// Inspect reports a container (by ID or name); ErrNotFound when there is none.
	Inspect(ctx context.Context, id string) (*ContainerState, error)
	// ImageEnv is the environment an image sets, which every container of it has.
	ImageEnv(ctx context.Context, image string) (map[string]string, error)
}

// Observed is a project's state as the engine reports it.
type Observed struct {
	Services map[string]*ServiceState
	Lock     *Container
	Proxy    *Container // the project's proxy: the one bearing its name, else the one being upgraded to
	// ProxyNext is the new proxy of an upgrade that was interrupted while both existed.
	ProxyNext *Container
	All       []Container
}

// ServiceState is what runs of one service.
type ServiceState struct {
	Name       string
	Live       *Container   // the newest container labelled live
	Candidates []*Container // left over by an interrupted apply
	Previous   []*Container // stopped earlier releases, newest first
	Others     []*Container // more than one live container, or unknown roles
}

// hasRelease reports whether a container of the service has that release number.
func (s *ServiceState) hasRelease(n int) bool {
	for _, list := range [][]*Container{{s.Live}, s.Candidates, s.Previous, s.Others} {
		for _, c := range list {
			if c != nil && c.Release() == n {
				return true
			}
		}
	}
	return false
}

// MaxRelease is the highest release number seen for the service, in any role.
func (s *ServiceState) MaxRelease() int {
	n := 0
	for _, list := range [][]*Container{{s.Live}, s.Candidates, s.Previous, s.Others} {
		for _, c := range list {
			if c != nil && c.Release() > n {
				n = c.Release()
			}
		}
	}
	return n
}

// Observe reads the project's state with one label-filtered list call.
func Observe(ctx context.Context, eng Engine, project string) (*Observed, error) {
	list, err := eng.Containers(ctx, project)
	if err != nil {
		return nil, err
	}
	return group(list), nil
}

func group(list []Container) *Observed {
	sort.Slice(list, func(i, j int) bool {
		if a, b := list[i].Release(), list[j].Release(); a != b {
			return a > b
		}
		return list[i].Created.After(list[j].Created)
	})
	o := &Observed{Services: map[string]*ServiceState{}, All: list}
	defer func() {
		if o.Proxy == nil { // the old proxy was removed, the new one not renamed yet
			o.Proxy, o.ProxyNext = o.ProxyNext, nil
		}
	}()
	for i := range list {
		c := &list[i]
		switch c.Role() {
		case RoleLock:
			o.Lock = c
			continue
		case RoleProxy:
			if strings.HasSuffix(c.Name, proxyNextSuffix) {
				o.ProxyNext = c
			} else {
				o.Proxy = c
			}
			continue
		}
		name := c.Service()
		if name == "" {
			continue
		}
		s := o.Services[name]
		if s == nil {
			s = &ServiceState{Name: name}
			o.Services[name] = s
		}
		liveName := c.Labels[LabelLiveName]
		switch {
		case liveName != "" && c.Name == liveName && s.Live == nil:
			s.Live = c
		case liveName == "" && c.Role() == RoleLive && s.Live == nil:
			s.Live = c // containers from before the live-name label
		case liveName != "" && strings.HasPrefix(c.Name, liveName+"-old-"):
			s.Others = append(s.Others, c) // a live release set aside by a cutover, whatever its label
		case c.Role() == RoleCandidate || c.Role() == RoleOneOff:
			s.Candidates = append(s.Candidates, c) // never live: removed by the next apply
		case c.Role() == RolePrevious:
			s.Previous = append(s.Previous, c)
		default:
			s.Others = append(s.Others, c) // a live release an interrupted cutover set aside
		}
	}
	// An interrupted cutover can leave no container bearing the live name (the old release was
	// renamed aside, the new one not created yet): then the newest release created as live is
	// the live one, and resuming it renames it back.
	for _, st := range o.Services {
		if st.Live != nil {
			continue
		}
		for i, c := range st.Others { // sorted newest release first
			if c.Role() == RoleLive || strings.Contains(c.Name, "-old-") {
				st.Live = c
				st.Others = append(st.Others[:i:i], st.Others[i+1:]...)
				break
			}
		}
	}
	return o
}

// ServiceNames lists the observed services, sorted.
func (o *Observed) ServiceNames() []string {
	var names []string
	for n := range o.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
