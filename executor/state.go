// Package executor turns a configuration into action: it reads what runs from the Docker engine,
// diffs it against the configuration into a Plan (a value with changes and ordered steps), renders
// plans as text and JSON, and carries plans out. The outside world sits behind narrow interfaces
// whose implementations live in the subpackages (docker, ...). Nothing here prints.
package executor

import (
	"context"
	"sort"
	"strings"
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
	// RoleMigrated marks that a migration ran on the live data (a container never started):
	// after a kill, the next apply does not run it again.
	RoleMigrated = "migrated"
)

// Observed is a project's state as the engine reports it.
type Observed struct {
	Services map[string]*ServiceState
	Lock     *Container
	Proxy    *Container // the project's proxy: the one bearing its name, else the one being upgraded to
	// ProxyNext is the new proxy of an upgrade that was interrupted while both existed.
	ProxyNext *Container
	All       []Container
	// Scratch lists the scratch volumes an interrupted backup left (a backup removes its own
	// when it ends), sorted by name; read for plan and status only (readScratch).
	Scratch []Volume
	// Safety lists the safety copies an interrupted held migration left (readScratch).
	Safety []Volume
}

// RoleScratch labels a volume the deployer made for a backup's snapshots.
const RoleScratch = "scratch"

// ScratchOf lists the names of a service's leftover scratch volumes.
func (o *Observed) ScratchOf(service string) []string {
	var out []string
	for _, v := range o.Scratch {
		if v.Labels[LabelService] == service {
			out = append(out, v.Name)
		}
	}
	return out
}

// ServiceState is what runs of one service.
type ServiceState struct {
	Name       string
	Live       *Container   // the newest container labelled live
	Candidates []*Container // left over by an interrupted apply
	Previous   []*Container // stopped earlier releases, newest first
	Others     []*Container // more than one live container, or unknown roles
	// Migrated are the marks of migrations that ran on the live data in an apply that did not
	// finish.
	Migrated []*Container
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

// readScratch lists the scratch volumes interrupted backups left: only plan and status show
// them, so the many Observe calls of a run (the lock's polling among them) do not list volumes.
func (o *Observed) readScratch(ctx context.Context, eng Engine, project string) error {
	vols, err := eng.Volumes(ctx, project)
	if err != nil {
		return err
	}
	for _, v := range vols {
		if v.Labels[LabelRole] == RoleSafety && v.Labels[LabelService] != "" {
			o.Safety = append(o.Safety, v)
		}
		if v.Labels[LabelRole] == RoleScratch && v.Labels[LabelService] != "" {
			o.Scratch = append(o.Scratch, v)
		}
	}
	return nil
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
		case c.Role() == RoleMigrated:
			s.Migrated = append(s.Migrated, c)
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

// hasLive reports whether any service has a live release, running or not.
func (o *Observed) hasLive() bool {
	for _, st := range o.Services {
		if st.Live != nil {
			return true
		}
	}
	return false
}
