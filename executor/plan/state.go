// Package executor turns a configuration into action: it reads what runs from the Docker engine,
// diffs it against the configuration into a Plan (a value with changes and ordered steps), renders
// plans as text and JSON, and carries plans out. The outside world sits behind narrow interfaces
// whose implementations live in the subpackages (docker, ...). Nothing here prints.
package plan

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// Image origins.
const (
	OriginBuilt  = "built"
	OriginPulled = "pulled"
	OriginFound  = "found"
)

// ImageOwned reports whether the deployer made a release's image, so that it may remove it with
// the release. Releases from before the origin was recorded: those built from a context were.
func ImageOwned(c *engine.Container) bool {
	switch c.Labels[engine.LabelImageOrigin] {
	case OriginBuilt, OriginPulled:
		return true
	case "":
		return c.Labels[engine.LabelContextHash] != ""
	}
	return false
}

// OriginOf is the origin recorded by a release of the service with that image, "" for none.
func OriginOf(st *ServiceState, imageID string) string {
	for _, list := range [][]*engine.Container{{st.Live}, st.Previous} {
		for _, c := range list {
			if c != nil && c.ImageID == imageID && ImageOwned(c) {
				if o := c.Labels[engine.LabelImageOrigin]; o != "" {
					return o
				}
				return OriginBuilt
			}
		}
	}
	return ""
}

// Observed is a project's state as the engine reports it: the containers that are its own (a
// label alone is not enough: names.go), and those labelled for it that are not.
type Observed struct {
	Services map[string]*ServiceState
	Lock     *engine.Container
	Proxy    *engine.Container // the project's proxy: the one bearing its name, else the one being upgraded to
	// ProxyNext is the new proxy of an upgrade that was interrupted while both existed.
	ProxyNext *engine.Container
	// All are the project's own containers: those above, and every service's.
	All []engine.Container
	// Ignored are containers labelled for the project that are none of its own: shown by
	// plan and status, never removed, renamed, started, routed to, backed up or restored into.
	Ignored []Ignored
	// Scratch lists the scratch volumes an interrupted backup left (a backup removes its own
	// when it ends), sorted by name; read for plan and status only (readScratch).
	Scratch []engine.Volume
	// Safety lists the safety copies an interrupted held migration left (readScratch).
	Safety []engine.Volume
	// Routed are the leftover candidates the proxy routes a service's requests to, by service:
	// a proxy cutover killed after its switch left them serving (readRoutes, for plan and
	// status only).
	Routed map[string]*engine.Container
	// Labelled is every container labelled for the project, its own or not (the addresses
	// they were given stay theirs).
	Labelled []engine.Container
	// Conflicts are claims of several containers to one role of the project (two live
	// releases of a service): plan and apply stop on them, naming them.
	Conflicts []string
}

// Ignored is a container labelled for the project that is not its own.
type Ignored struct {
	ID        string `json:"id,omitempty"`
	Container string `json:"container,omitempty"`
	Volume    string `json:"volume,omitempty"`  // a volume labelled as a scratch volume or safety copy
	Service   string `json:"service,omitempty"` // the configured service its labels name, if any
	// Reason says what it claims to be and why it is not: "x-evil claims to be a release of
	// service.web (role "live", release "50"), but its name is none of those service.web's
	// container_name x-web gives".
	Reason string `json:"reason"`
}

// ScratchOf lists the names of a service's leftover scratch volumes.
func (o *Observed) ScratchOf(service string) []string {
	var out []string
	for _, v := range o.Scratch {
		if v.Labels[engine.LabelService] == service {
			out = append(out, v.Name)
		}
	}
	return out
}

// ServiceState is what runs of one service: only containers that bear a name the deployer
// derives for the service (from its container_name) and whose labels agree with that name.
type ServiceState struct {
	Name       string
	Live       *engine.Container   // the container bearing the container_name (else the one set aside)
	Candidates []*engine.Container // a candidate, one-off or helper containers an interrupted apply left
	Previous   []*engine.Container // stopped earlier releases, newest first
	Others     []*engine.Container // live releases a cutover set aside (<name>-old-N), newest first
	// Migrated are the marks of migrations that ran on the live data in an apply that did not
	// finish.
	Migrated []*engine.Container

	lives []*engine.Container // what claims the live name while observing (two: a conflict)
}

// hasRelease reports whether a container of the service has that release number.
func (s *ServiceState) hasRelease(n int) bool {
	for _, list := range [][]*engine.Container{{s.Live}, s.Candidates, s.Previous, s.Others} {
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
	for _, list := range [][]*engine.Container{{s.Live}, s.Candidates, s.Previous, s.Others} {
		for _, c := range list {
			if c != nil && c.Release() > n {
				n = c.Release()
			}
		}
	}
	return n
}

// keptRelease is the highest release number of the service's releases, leftover candidates
// left out (their number is given again).
func (s *ServiceState) keptRelease() int {
	n := 0
	for _, list := range [][]*engine.Container{{s.Live}, s.Previous, s.Others} {
		for _, c := range list {
			if c != nil {
				n = max(n, c.Release())
			}
		}
	}
	return n
}

// takeoverBy is the release of the service made to replace the container id, which the
// deployer did not make (its LabelTakeoverOf), nil for none.
func (s *ServiceState) takeoverBy(id string) *engine.Container {
	for _, list := range [][]*engine.Container{{s.Live}, s.Candidates, s.Others} {
		for _, c := range list {
			if c != nil && c.Labels[engine.LabelTakeoverOf] == id {
				return c
			}
		}
	}
	return nil
}

// Observe reads the project's state with one label-filtered list call. The configuration says
// which names are the project's (its services' container_name); those of a service it no
// longer has are read from the container name its releases recorded.
func Observe(ctx context.Context, eng engine.Engine, p *config.Project) (*Observed, error) {
	list, err := eng.Containers(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	return observe(p, list), nil
}

// ReadScratch lists the scratch volumes interrupted backups left: only plan and status show
// them, so the many Observe calls of a run (the lock's polling among them) do not list volumes.
// As for containers, a volume is a service's scratch volume or safety copy only when it bears
// the name the deployer gives it (<project>-<service>-snapshots, -migration, -safety) and its
// labels agree: the next apply removes a scratch volume and puts a safety copy back into the
// service's data. Anything else labelled so is ignored.
func (o *Observed) ReadScratch(ctx context.Context, eng engine.Engine, p *config.Project) error {
	vols, err := eng.Volumes(ctx, p.Name)
	if err != nil {
		return err
	}
	for _, v := range vols {
		role, svc := v.Labels[engine.LabelRole], v.Labels[engine.LabelService]
		if role != RoleSafety && role != RoleScratch || svc == "" {
			continue
		}
		h := p.Name + "-" + svc
		switch {
		case !serviceNameRE.MatchString(svc):
			o.ignoreVolume(v, fmt.Sprintf("its service label %q is no service name", svc))
		case role == RoleSafety && v.Name != h+"-safety":
			o.ignoreVolume(v, fmt.Sprintf("a safety copy of service.%s is named %s", svc, h+"-safety"))
		case role == RoleScratch && v.Name != h+"-snapshots" && v.Name != h+"-migration":
			o.ignoreVolume(v, fmt.Sprintf("a scratch volume of service.%s is named %s or %s", svc, h+"-snapshots", h+"-migration"))
		case role == RoleSafety:
			o.Safety = append(o.Safety, v)
		default:
			o.Scratch = append(o.Scratch, v)
		}
	}
	return nil
}

// ignoreVolume records a volume labelled as one of the project's own that is not.
func (o *Observed) ignoreVolume(v engine.Volume, why string) {
	o.Ignored = append(o.Ignored, Ignored{Volume: v.Name, Reason: fmt.Sprintf("the volume %s claims to be a %s volume of service %q, but %s", v.Name, v.Labels[engine.LabelRole], v.Labels[engine.LabelService], why)})
}

// observe sorts the containers labelled for the project (list may hold others: they are
// skipped) into its state, and those that are not its own into Ignored.
func observe(p *config.Project, list []engine.Container) *Observed {
	var mine []engine.Container
	for _, c := range list {
		if c.Labels[engine.LabelProject] == p.Name {
			mine = append(mine, c)
		}
	}
	sort.SliceStable(mine, func(i, j int) bool {
		if a, b := mine[i].Release(), mine[j].Release(); a != b {
			return a > b
		}
		if !mine[i].Created.Equal(mine[j].Created) {
			return mine[i].Created.After(mine[j].Created)
		}
		return mine[i].Name < mine[j].Name
	})
	o := &Observed{Services: map[string]*ServiceState{}, Labelled: mine}
	ignored := map[string]bool{}
	for i := range mine {
		c := &mine[i]
		if why := o.place(p, c); why != "" {
			o.ignore(p, c, why)
			ignored[c.ID] = true
		}
	}
	if o.Proxy == nil { // the old proxy was removed, the new one not renamed yet
		o.Proxy, o.ProxyNext = o.ProxyNext, nil
	}
	for _, name := range o.ServiceNames() {
		st := o.Services[name]
		switch {
		case len(st.lives) == 1:
			st.Live = st.lives[0]
		case len(st.lives) > 1:
			o.conflict(p, st, "live release", st.lives, ignored)
		case len(st.Others) == 1:
			// An interrupted cutover can leave no container bearing the live name (the old
			// release was renamed aside, the new one not made yet): the one set aside is the
			// live one, and resuming it renames it back.
			st.Live, st.Others = st.Others[0], nil
		case len(st.Others) > 1:
			o.conflict(p, st, "live release (none bears its container name)", st.Others, ignored)
			st.Others = nil
		}
		st.lives = nil
	}
	for _, c := range mine {
		if !ignored[c.ID] {
			o.All = append(o.All, c)
		}
	}
	return o
}

// place puts one container labelled for the project where it belongs, or says why it is none
// of the project's.
func (o *Observed) place(p *config.Project, c *engine.Container) string {
	role := c.Role()
	switch c.Name {
	case LockName(p.Name):
		if role != RoleLock {
			return fmt.Sprintf("it bears the deploy lock's name with the role %q", role)
		}
		o.Lock = c
		return ""
	case ProxyName(p.Name), ProxyName(p.Name) + ProxyNextSuffix:
		if role != RoleProxy {
			return fmt.Sprintf("it bears the proxy's name with the role %q", role)
		}
		if strings.HasSuffix(c.Name, ProxyNextSuffix) {
			o.ProxyNext = c
		} else {
			o.Proxy = c
		}
		return ""
	}
	switch role {
	case RoleLock:
		return fmt.Sprintf("the project's deploy lock is named %s", LockName(p.Name))
	case RoleProxy:
		return fmt.Sprintf("the project's proxy is named %s (%s during an upgrade)", ProxyName(p.Name), ProxyName(p.Name)+ProxyNextSuffix)
	}
	if role == "" {
		return "it has no role (a container run by hand from an image the deployer built before 2026-12 inherits the image's labels): it is left alone"
	}
	svc := c.Service()
	if svc == "" {
		return "it names no service"
	}
	names, why := namesFor(p, svc, c)
	if why != "" {
		return why
	}
	kind, num := names.kind(c.Name)
	if kind == nameNone {
		return names.notDerived(p, c)
	}
	if why := names.agrees(c, kind, num); why != "" {
		return why
	}
	st := o.Services[svc]
	if st == nil {
		st = &ServiceState{Name: svc}
		o.Services[svc] = st
	}
	switch kind {
	case nameLive:
		st.lives = append(st.lives, c)
	case namePrevious:
		st.Previous = append(st.Previous, c)
	case nameSetAside:
		st.Others = append(st.Others, c)
	case nameMigrated:
		st.Migrated = append(st.Migrated, c)
	default:
		st.Candidates = append(st.Candidates, c) // never live: removed by the next apply
	}
	return ""
}

// ignore records a container labelled for the project that is none of its own.
func (o *Observed) ignore(p *config.Project, c *engine.Container, why string) {
	ig := Ignored{ID: c.ID, Container: c.Name, Reason: fmt.Sprintf("%s claims to be %s, but %s", c.Name, claimOf(c), why)}
	if p.Service(c.Service()) != nil {
		ig.Service = c.Service()
	}
	o.Ignored = append(o.Ignored, ig)
}

// conflict records containers that each are a service's own by name and labels but claim one
// role: none of them is acted on, and plan and apply stop, naming them all.
func (o *Observed) conflict(p *config.Project, st *ServiceState, role string, list []*engine.Container, ignored map[string]bool) {
	var names []string
	for _, c := range list {
		names = append(names, fmt.Sprintf("%s (release %d, %s)", c.Name, c.Release(), c.State))
		ignored[c.ID] = true
		o.ignore(p, c, fmt.Sprintf("%d containers claim to be service.%s's %s", len(list), st.Name, role))
	}
	o.Conflicts = append(o.Conflicts, fmt.Sprintf("%d containers claim to be service.%s's %s: %s; none of them is acted on: rename or remove those that are not", len(list), st.Name, role, strings.Join(names, " and ")))
}

// claimOf says what a container's labels claim it is (label values quoted: they are anyone's
// text).
func claimOf(c *engine.Container) string {
	svc := "service " + strconv.Quote(c.Service())
	if serviceNameRE.MatchString(c.Service()) {
		svc = "service." + c.Service()
	}
	switch c.Role() {
	case RoleLock:
		return "the project's deploy lock"
	case RoleProxy:
		return "the project's proxy"
	case RoleLive, RoleCandidate:
		return fmt.Sprintf("a release of %s (role %q, release %q)", svc, c.Role(), c.Labels[engine.LabelRelease])
	case RolePrevious:
		return fmt.Sprintf("a previous release of %s (release %q)", svc, c.Labels[engine.LabelRelease])
	case RoleOneOff:
		return fmt.Sprintf("a one-off container of %s", svc)
	case RoleMigrated:
		return fmt.Sprintf("the mark of a migration of %s", svc)
	case "":
		if c.Service() == "" {
			return "a container of the project"
		}
		return fmt.Sprintf("a container of %s", svc)
	}
	return fmt.Sprintf("a container of %s with the role %q", svc, c.Role())
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

// ReadRoutes finds the leftover candidates the project's proxy routes a service's requests to
// (Observed.Routed): a proxy cutover killed after its switch leaves the candidate serving while
// the old release still runs under the live name. The proxy is asked only when a candidate
// runs; a proxy that does not answer is status's to report, and plan's to start again.
func (o *Observed) ReadRoutes(ctx context.Context, eng engine.Engine, p *config.Project, proxyRoutes RouteReader) {
	if proxyRoutes == nil || o.Proxy == nil || !o.Proxy.Running() {
		return
	}
	var routes []Route
	read := false
	for _, name := range o.ServiceNames() {
		for _, c := range o.Services[name].Candidates {
			if !c.Running() {
				continue
			}
			if !read {
				var err error
				if routes, err = proxyRoutes(ctx, eng, o.Proxy.ID); err != nil {
					return
				}
				read = true
			}
			st, err := eng.Inspect(ctx, c.ID)
			if err != nil || st.IPs[NetworkName(p.Name)] == "" {
				continue
			}
			for _, r := range routes {
				host, _, err := net.SplitHostPort(r.Backend)
				if err == nil && host == st.IPs[NetworkName(p.Name)] && strings.HasPrefix(r.Name, name+"/") && !strings.HasSuffix(r.Name, CandidateRouteSuffix) {
					if o.Routed == nil {
						o.Routed = map[string]*engine.Container{}
					}
					o.Routed[name] = c
				}
			}
		}
	}
}
