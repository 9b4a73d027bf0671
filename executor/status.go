package executor

import (
	"context"
	"fmt"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/probe"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// ServiceStatus is what runs of one service now.
type ServiceStatus struct {
	Service     string          `json:"service"`
	Configured  bool            `json:"configured"`
	LiveRelease int             `json:"live_release,omitempty"`
	Container   string          `json:"container,omitempty"`
	Image       string          `json:"image,omitempty"`
	ImageID     string          `json:"image_id,omitempty"`
	State       string          `json:"state"` // running, exited, ... or "not deployed"
	Ports       []string        `json:"ports,omitempty"`
	Health      string          `json:"health"` // healthy, unhealthy: ..., unchecked
	Previous    []int           `json:"previous_releases,omitempty"`
	Leftovers   []plan.Leftover `json:"leftovers,omitempty"`
	// Serving says what the proxy routes the service's requests to when it is not the live
	// release: the candidate of a proxy cutover an apply was killed in.
	Serving string `json:"serving,omitempty"`
}

// Status reports every configured or running service, the lock, and leftovers.
type Status struct {
	FormatVersion string           `json:"format_version"`
	Project       string           `json:"project"`
	Engine        string           `json:"engine"`
	Lock          string           `json:"lock,omitempty"`
	Proxy         *ProxyState      `json:"proxy,omitempty"`
	Services      []*ServiceStatus `json:"services"`
	// Ignored are containers labelled for the project that are none of its own.
	Ignored []plan.Ignored `json:"ignored,omitempty"`
	// Conflicts are roles of the project that several containers claim: plan and apply stop.
	Conflicts []string `json:"conflicts,omitempty"`
}

// ProxyState is the project's proxy and its routes.
type ProxyState struct {
	Container string `json:"container"`
	// State is the container's (running, exited...), or ProxyUnhealthy when it runs but does
	// not answer its control socket or a route cannot accept connections (Error says which).
	State  string              `json:"state"`
	Routes []proxy.RouteStatus `json:"routes,omitempty"`
	Error  string              `json:"error,omitempty"`
}

// GetStatus reads what runs and checks the health of each live release once. On a remote
// engine that health is checked from the project's proxy, on the engine's host (its ports may
// not be reachable from here).
func GetStatus(ctx context.Context, p *config.Project, eng Engine, probeHost string, remote bool) (*Status, error) {
	if err := eng.Ping(ctx); err != nil {
		return nil, err
	}
	obs, err := plan.Observe(ctx, eng, p)
	if err != nil {
		return nil, err
	}
	if err := obs.ReadScratch(ctx, eng, p); err != nil {
		return nil, err
	}
	obs.ReadRoutes(ctx, eng, p, readProxyRoutes)
	out := &Status{FormatVersion: plan.FormatVersion, Project: p.Name, Engine: eng.Host(), Services: []*ServiceStatus{}}
	if obs.Lock != nil {
		out.Lock = "held by " + plan.DescribeLock(obs.Lock)
	}
	if obs.Proxy != nil {
		out.Proxy = &ProxyState{Container: obs.Proxy.Name, State: obs.Proxy.State}
		if rt, ok := eng.(Runtime); ok && obs.Proxy.Running() {
			if routes, err := proxyRoutes(ctx, rt, obs.Proxy.ID); err != nil {
				out.Proxy.State, out.Proxy.Error = ProxyUnhealthy, err.Error()
			} else {
				out.Proxy.Routes = routes
				if why := cannotAccept(routes); why != "" {
					out.Proxy.State, out.Proxy.Error = ProxyUnhealthy, why
				}
			}
		}
	}
	names := map[string]bool{}
	for _, s := range p.Services {
		names[s.Name] = true
	}
	for _, n := range obs.ServiceNames() {
		names[n] = true
	}
	leftovers := plan.Leftovers(obs, p, func(string) bool { return true })
	red := plan.NewRedactor(p)
	for _, ig := range obs.Ignored {
		ig.Reason = red.Redact(ig.Reason)
		out.Ignored = append(out.Ignored, ig)
	}
	for _, c := range obs.Conflicts {
		out.Conflicts = append(out.Conflicts, red.Redact(c))
	}
	for i := range leftovers {
		leftovers[i].Detail = red.Redact(leftovers[i].Detail)
	}
	for _, name := range plan.SortedKeys(names) {
		s := p.Service(name)
		ss := &ServiceStatus{Service: name, Configured: s != nil, State: "not deployed", Health: "unchecked"}
		st := obs.Services[name]
		if st != nil && st.Live != nil {
			l := st.Live
			ss.LiveRelease, ss.Container, ss.Image, ss.ImageID, ss.State = l.Release(), l.Name, l.ImageRef(), l.ImageID, l.State
			if c := obs.Routed[name]; c != nil {
				ss.Serving = red.Redact(fmt.Sprintf("candidate %s (release %d) of an interrupted cutover: the proxy routes the service's requests to it, not to release %d; the next apply routes them back, then deploys", c.Name, c.Release(), l.Release()))
			}
			if s != nil {
				for _, port := range s.Ports {
					ss.Ports = append(ss.Ports, fmt.Sprintf("%d->%d/%s", port.Host, port.Container, port.Protocol))
				}
				if h, port := s.HealthCheck, s.HTTPPort(); h != nil && port != nil && l.Running() {
					c := probe.Check{URL: fmt.Sprintf("http://%s:%d%s", probeHost, port.Host, h.Path), Status: h.Status, Timeout: h.Timeout}
					get := probe.Get
					if rt, ok := eng.(Runtime); ok && remote && obs.Proxy != nil && obs.Proxy.Running() {
						c.URL = fmt.Sprintf("http://127.0.0.1:%d%s", port.Host, h.Path) // the proxy has the host's network
						get = func(ctx context.Context, c probe.Check) probe.Result {
							return probeResult(proxy.Exec(ctx, rt, obs.Proxy.ID, proxy.Request{Op: "probe", URL: c.URL, Timeout: c.Timeout}))
						}
					}
					if res := get(ctx, c); c.OK(res) {
						ss.Health = "healthy"
					} else {
						ss.Health = "unhealthy: " + red.Output(c.Describe(res))
					}
				}
			}
		}
		if st != nil {
			for _, c := range st.Previous {
				ss.Previous = append(ss.Previous, c.Release())
			}
		}
		for _, l := range leftovers {
			if l.Service == name {
				ss.Leftovers = append(ss.Leftovers, l)
			}
		}
		out.Services = append(out.Services, ss)
	}
	return out, nil
}

// ProxyUnhealthy is the state of a proxy that runs but cannot serve: its control socket does not
// answer, or a route cannot accept connections.
const ProxyUnhealthy = "unhealthy"

// cannotAccept says which routes cannot accept connections now, "" when all can. A proxy too
// old to report it reports none.
func cannotAccept(routes []proxy.RouteStatus) string {
	var out []string
	for _, r := range routes {
		if r.AcceptError != "" {
			out = append(out, fmt.Sprintf("route %s (%s) cannot accept connections: %s", r.Name, r.Listen, r.AcceptError))
		}
	}
	return strings.Join(out, "; ")
}
