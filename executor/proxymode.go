package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/probe"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// NetworkName is the project's private network: releases join it, the proxy reaches them on it.
func NetworkName(project string) string { return project + "-net" }

// ProxyName is the project's proxy container.
func ProxyName(project string) string { return project + "-proxy" }

// proxyNextSuffix names the new proxy of an upgrade while the old one still bears the name.
const proxyNextSuffix = "-next"

func proxied(s *config.Service) bool { return s.Deploy.Cutover == "proxy" }

// LocalEngine reports whether an engine address is on this machine, where the deployer reaches
// the ports candidates publish on 127.0.0.1.
func LocalEngine(host string) bool {
	u, err := url.Parse(host)
	if err != nil || host == "" || u.Scheme == "unix" || u.Scheme == "npipe" {
		return true
	}
	h := u.Hostname()
	return h == "" || h == "localhost" || h == "127.0.0.1"
}

// remote reports whether the engine is on another machine than the deployer.
func (a *Applier) remote() bool { return !LocalEngine("tcp://" + net.JoinHostPort(a.probeHost(), "0")) }

// checksInside reports whether a service's health checks run from inside the proxy, on the
// engine's host: always for proxied services, and for every service of a remote engine, whose
// candidates publish their ports on its 127.0.0.1, out of the deployer's reach.
func (a *Applier) checksInside(s *config.Service) bool { return proxied(s) || a.remote() }

func (a *Applier) anyProxied() bool {
	for _, s := range a.Project.Services {
		if proxied(s) {
			return true
		}
	}
	return false
}

// ctl sends one request to the proxy through docker exec.
func (a *Applier) ctl(ctx context.Context, req proxy.Request) (*proxy.Response, error) {
	if a.proxyID == "" {
		return nil, errors.New("the proxy is not running")
	}
	b, _ := json.Marshal(req)
	out, code, err := a.Runtime.Exec(ctx, a.proxyID, []string{"/deployer", "proxy", "ctl", string(b)})
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("proxy: %s", strings.TrimSpace(out))
	}
	var resp proxy.Response
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		return nil, fmt.Errorf("proxy answered %q: %w", strings.TrimSpace(out), err)
	}
	if !resp.OK && resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}

// ensureProxy makes sure the project's proxy runs the current deployer, creating or upgrading
// it, then points every route at the live release of its service.
func (a *Applier) ensureProxy(ctx context.Context) error {
	if a.proxyID != "" {
		return nil
	}
	return a.step("", StepProxy, "make sure the project's proxy runs and routes to the live releases", func() error {
		if err := a.ensureNetwork(ctx); err != nil {
			return err
		}
		image, err := a.helperImage(ctx)
		if err != nil {
			return err
		}
		obs, err := Observe(ctx, a.Runtime, a.Project.Name)
		if err != nil {
			return err
		}
		if err := a.finishProxyUpgrade(ctx, obs); err != nil {
			return err
		}
		fresh := true
		if p := obs.Proxy; p != nil && p.ImageID == image {
			if !p.Running() {
				a.warn("", "the proxy %s was %s: starting it", p.Name, p.State)
				if err := a.Runtime.StartContainer(ctx, p.ID); err != nil {
					return err
				}
			} else {
				fresh = false // it answers the route status below, or waitProxy there
			}
			a.proxyID = p.ID
		} else {
			if err := a.startProxy(ctx, image, obs.Proxy); err != nil {
				return err
			}
		}
		if fresh {
			if err := a.waitProxy(ctx); err != nil {
				return err
			}
		}
		return a.syncRoutes(ctx, obs)
	})
}

// startProxy creates the proxy container; with an old one running (an upgrade), the new one
// takes the old one's listening sockets over (or, from a proxy too old for that, shares its
// ports) before the old one stops.
func (a *Applier) startProxy(ctx context.Context, image string, old *Container) error {
	name := ProxyName(a.Project.Name)
	if old != nil {
		name += proxyNextSuffix
	}
	cmd := []string{"proxy", "serve"}
	if old != nil {
		// The proxy it replaces may be too old to hand its sockets over; then, and only for
		// it, the new one shares its ports (they were opened for sharing) until it stops.
		cmd = append(cmd, "--reuse-port")
	}
	spec := ContainerSpec{Name: name, Image: image, Cmd: cmd, HostNetwork: true, Restart: "unless-stopped",
		Labels:  map[string]string{LabelProject: a.Project.Name, LabelRole: RoleProxy, LabelCreatedAt: time.Now().UTC().Format(time.RFC3339)},
		Volumes: []VolumeMount{{Name: ProxyName(a.Project.Name) + "-state", Target: "/state"}}}
	id, err := a.Runtime.CreateContainer(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		return fmt.Errorf("a container named %s exists and is not this project's proxy: remove or rename it", name)
	}
	if err != nil {
		return err
	}
	if err := a.Runtime.StartContainer(ctx, id); err != nil {
		a.Runtime.RemoveContainer(ctx, id)
		return err
	}
	a.proxyID = id
	if old == nil {
		return nil
	}
	a.emit(Event{Type: EventLog, Step: "proxy", Detail: fmt.Sprintf("upgrading the proxy %s: the new one takes over its ports first", old.Name)})
	if err := a.waitProxy(ctx); err != nil {
		return err
	}
	a.crash("proxy.next-started")
	if old.Running() {
		// Copy the old proxy's routes, so both serve the same before the old one stops.
		oldID := a.proxyID
		a.proxyID = old.ID
		st, err := a.ctl(ctx, proxy.Request{Op: "status"})
		a.proxyID = oldID
		if err == nil {
			for _, r := range st.Routes {
				rt := r.Route
				if _, err := a.ctl(ctx, proxy.Request{Op: "set", Route: &rt}); err != nil {
					return err
				}
			}
		}
		a.Runtime.StopContainer(ctx, old.ID, 30*time.Second) // stops accepting, lets requests finish
		a.crash("proxy.old-stopped")
	}
	if err := a.Runtime.RemoveContainer(ctx, old.ID); err != nil {
		return err
	}
	a.crash("proxy.old-removed")
	return a.Runtime.RenameContainer(ctx, id, ProxyName(a.Project.Name))
}

// finishProxyUpgrade deals with what an upgrade of the proxy left when it was interrupted: a
// new proxy that serves alone takes the name; one beside an old proxy that still serves is
// removed, and the upgrade starts over.
func (a *Applier) finishProxyUpgrade(ctx context.Context, obs *Observed) error {
	name := ProxyName(a.Project.Name)
	if n := obs.ProxyNext; n != nil {
		if obs.Proxy.Running() || !n.Running() {
			a.warn("", "an interrupted upgrade of the proxy left %s beside %s, which still serves: removing it; the upgrade starts over", n.Name, obs.Proxy.Name)
			a.Runtime.StopContainer(ctx, n.ID, 30*time.Second) // the old proxy keeps its sockets
			if err := a.Runtime.RemoveContainer(ctx, n.ID); err != nil {
				return err
			}
			obs.ProxyNext = nil
			return nil
		}
		a.warn("", "an interrupted upgrade of the proxy left %s serving and %s stopped: finishing it", n.Name, obs.Proxy.Name)
		if err := a.Runtime.RemoveContainer(ctx, obs.Proxy.ID); err != nil {
			return err
		}
		obs.Proxy, obs.ProxyNext = n, nil
	}
	if p := obs.Proxy; p != nil && strings.HasSuffix(p.Name, proxyNextSuffix) {
		if err := a.Runtime.RenameContainer(ctx, p.ID, name); err != nil {
			return err
		}
		p.Name = name
	}
	return nil
}

func (a *Applier) waitProxy(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := a.ctl(ctx, proxy.Request{Op: "ping"})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			logs, _ := a.Runtime.Logs(ctx, a.proxyID, logLines)
			return fmt.Errorf("the proxy does not answer: %v; its output:\n%s", err, indent(logs))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func routeName(s *config.Service, p *config.Port) string {
	return s.Name + "/" + strconv.Itoa(p.Container)
}

// candidateSuffix names the temporary route that shows a candidate on its fixed port.
const candidateRouteSuffix = "@candidate"

func candidateRouteName(s *config.Service, p *config.Port) string {
	return routeName(s, p) + candidateRouteSuffix
}

// setCandidateRoutes shows the candidate of a proxied service on 127.0.0.1:<candidate> for
// each fixed candidate port, as the seed's green was, until the deploy ends. The candidate
// itself publishes nothing: a published port would stay with it once it is live. It is a view
// for the operator, so a port that cannot be taken is a warning.
func (a *Applier) setCandidateRoutes(ctx context.Context, s *config.Service, cand *ContainerState) {
	for _, p := range s.Ports {
		if p.Candidate == 0 {
			continue
		}
		addr, err := a.backendAddr(cand, p.Container)
		if err != nil {
			continue
		}
		_, err = a.ctl(ctx, proxy.Request{Op: "set", Route: &proxy.Route{Name: candidateRouteName(s, p), Listen: fmt.Sprintf("127.0.0.1:%d", p.Candidate), Protocol: p.Protocol, Backend: addr}})
		if err != nil {
			a.warn(s.Name, "the candidate is not shown on 127.0.0.1:%d (%v); it is checked through the proxy all the same", p.Candidate, err)
		}
	}
}

// removeCandidateRoutes frees the candidate ports once a deploy or rollback ends, whatever
// its outcome.
func (a *Applier) removeCandidateRoutes(ctx context.Context, s *config.Service) {
	if !proxied(s) || a.proxyID == "" {
		return
	}
	for _, p := range s.Ports {
		if p.Candidate != 0 {
			a.ctl(ctx, proxy.Request{Op: "remove", Name: candidateRouteName(s, p)})
		}
	}
}

// backendAddr is where the proxy reaches a release's port: its address on the project network.
func (a *Applier) backendAddr(c *ContainerState, port int) (string, error) {
	ip := c.IPs[NetworkName(a.Project.Name)]
	if ip == "" {
		return "", fmt.Errorf("container %s is not on network %s", c.Name, NetworkName(a.Project.Name))
	}
	return fmt.Sprintf("%s:%d", ip, port), nil
}

// setRoutes points a service's routes at a release and returns the backends they had.
func (a *Applier) setRoutes(ctx context.Context, s *config.Service, c *ContainerState) (map[string]string, error) {
	prev := map[string]string{}
	for _, p := range s.Ports {
		addr, err := a.backendAddr(c, p.Container)
		if err != nil {
			return prev, err
		}
		resp, err := a.ctl(ctx, proxy.Request{Op: "set", Route: &proxy.Route{Name: routeName(s, p), Listen: fmt.Sprintf(":%d", p.Host), Protocol: p.Protocol, Backend: addr}})
		if err != nil {
			if strings.Contains(err.Error(), "address already in use") {
				return prev, fmt.Errorf("host port %d is taken by another process or container: free it or choose another port (%v)", p.Host, err)
			}
			return prev, err
		}
		prev[routeName(s, p)] = resp.Previous
	}
	return prev, nil
}

// syncRoutes points every proxied service's routes at its running live release, setting only
// those that differ from what the proxy has (each control request is a docker exec).
func (a *Applier) syncRoutes(ctx context.Context, obs *Observed) error {
	st, err := a.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		if err := a.waitProxy(ctx); err != nil {
			return err
		}
		if st, err = a.ctl(ctx, proxy.Request{Op: "status"}); err != nil {
			return err
		}
	}
	have := map[string]proxy.Route{}
	for _, r := range st.Routes {
		if strings.HasSuffix(r.Name, candidateRouteSuffix) {
			// Left by an apply that was killed: the candidate is gone, its port must be free.
			if _, err := a.ctl(ctx, proxy.Request{Op: "remove", Name: r.Name}); err != nil {
				return err
			}
			continue
		}
		have[r.Name] = r.Route
	}
	for _, s := range a.Project.Services {
		st := obs.Services[s.Name]
		if !proxied(s) || st == nil || st.Live == nil || !st.Live.Running() {
			continue
		}
		live, err := a.Runtime.Inspect(ctx, st.Live.ID)
		if err != nil {
			return err
		}
		if _, ok := live.IPs[NetworkName(a.Project.Name)]; !ok {
			continue // a release from restart mode: the switch to the proxy happens at its next cutover
		}
		if a.routesMatch(s, live, have) {
			continue
		}
		if _, err := a.setRoutes(ctx, s, live); err != nil {
			return err
		}
	}
	return nil
}

// routesMatch reports whether the proxy has every route of a service leading to c already.
func (a *Applier) routesMatch(s *config.Service, c *ContainerState, have map[string]proxy.Route) bool {
	for _, p := range s.Ports {
		addr, err := a.backendAddr(c, p.Container)
		r, ok := have[routeName(s, p)]
		if err != nil || !ok || r.Backend != addr || r.Listen != fmt.Sprintf(":%d", p.Host) || r.Protocol != p.Protocol {
			return false
		}
	}
	return true
}

// getter makes one probe attempt: from inside the proxy for proxied services (the engine's
// network, also when the engine is remote), directly otherwise.
func (a *Applier) getter(s *config.Service) func(context.Context, probe.Check) probe.Result {
	if !a.checksInside(s) || a.proxyID == "" {
		return probe.Get
	}
	return func(ctx context.Context, c probe.Check) probe.Result {
		resp, err := a.ctl(ctx, proxy.Request{Op: "probe", URL: c.URL, Timeout: c.Timeout})
		if err != nil {
			return probe.Result{Err: err}
		}
		if resp.Error != "" {
			return probe.Result{Err: errors.New(resp.Error)}
		}
		return probe.Result{Status: resp.Status, Body: resp.Body}
	}
}

// candidateURL is where the candidate's HTTP port answers a check.
func (a *Applier) candidateURL(s *config.Service, cand *ContainerState, port *config.Port, path string) string {
	if a.checksInside(s) && a.proxyID != "" {
		if addr, err := a.backendAddr(cand, port.Container); err == nil {
			return "http://" + addr + path
		}
	}
	return fmt.Sprintf("http://%s:%d%s", a.probeHost(), cand.Ports[port.Container], path)
}

// proxyCutover makes the candidate live: its routes switch to it for new requests at once, and
// it takes the live name; the old release keeps its requests in flight until it is drained
// after verification.
func (a *Applier) proxyCutover(ctx context.Context, s *config.Service, r *release, old, cand *ContainerState, ch *Change) error {
	detail := fmt.Sprintf("proxy: route new requests to release %d", r.number)
	name := StepCutover
	if old == nil {
		name = StepStart
	}
	return a.step(s.Name, name, detail, func() error {
		if _, err := a.setRoutes(ctx, s, cand); err != nil {
			if old != nil && strings.Contains(err.Error(), "is taken") && len(old.Ports) > 0 {
				// The live release publishes the host port itself (it was deployed with the
				// restart cutover, or it is a container being taken over): this one switch to
				// the proxy is a restart.
				who := fmt.Sprintf("release %d publishes the host port itself (restart cutover)", ch.LiveRelease)
				if a.adopting[old.ID] {
					who = fmt.Sprintf("the container being taken over (%s) publishes the host port itself", old.Name)
				}
				a.warn(s.Name, "%s: stopping it so the proxy can take the port; this one switch has a window without service, as long as a restart's", who)
				if a.portMoved == nil {
					a.portMoved = map[string]bool{}
				}
				a.portMoved[s.Name] = true
				if err := a.stopRelease(ctx, s, old.ID, "release "+old.Spec.Labels[LabelRelease]); err != nil {
					return err
				}
				if _, err := a.setRoutes(ctx, s, cand); err != nil {
					a.Runtime.StartContainer(ctx, old.ID)
					return err
				}
			} else {
				return err
			}
		}
		a.crash("cutover.switched")
		if old != nil && old.Name != oldName(s, ch.LiveRelease) {
			if err := a.Runtime.RenameContainer(ctx, old.ID, oldName(s, ch.LiveRelease)); err != nil {
				return err
			}
		}
		a.crash("cutover.set-aside")
		if err := a.Runtime.RenameContainer(ctx, cand.ID, s.ContainerName); err != nil {
			return err
		}
		return a.Runtime.SetRestart(ctx, cand.ID, "unless-stopped")
	})
}

// proxyVerify checks the new live release through the proxy's port, and that the proxy did not
// fail back to the old release (which happens when the new one cannot be reached).
func (a *Applier) proxyVerify(ctx context.Context, s *config.Service, liveID string) error {
	return a.step(s.Name, StepVerify, "health-check the new live release through the proxy", func() error {
		live := &ContainerState{ID: liveID, Name: s.ContainerName}
		alive := func() error {
			if err := a.alive(ctx, live); err != nil {
				return err
			}
			return a.routesOn(ctx, s, liveID)
		}
		port := s.HTTPPort()
		if s.HealthCheck == nil || port == nil {
			return settled(ctx, alive)
		}
		h := s.HealthCheck
		url := fmt.Sprintf("http://127.0.0.1:%d%s", port.Host, h.Path)
		c := probe.Check{URL: url, Status: h.Status, Timeout: h.Timeout}
		if err := probe.UntilWith(ctx, a.getter(s), c, h.Interval, h.Healthy, h.Deadline, alive); err != nil {
			return fmt.Errorf("health check GET %s through the proxy: %w", url, err)
		}
		return alive()
	})
}

// routesOn fails when a route of the service no longer sends new requests to the release.
func (a *Applier) routesOn(ctx context.Context, s *config.Service, id string) error {
	st, err := a.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		return err
	}
	live, err := a.Runtime.Inspect(ctx, id)
	if err != nil {
		return err
	}
	for _, p := range s.Ports {
		want, _ := a.backendAddr(live, p.Container)
		for _, r := range st.Routes {
			if r.Name == routeName(s, p) && (r.FailedOver || r.Backend != want) {
				return fmt.Errorf("the proxy could not reach the new release and sent requests back to the previous one")
			}
		}
	}
	return nil
}

// drain lets the old release finish what it has in flight, up to deploy.drain, then cuts the rest.
func (a *Applier) drain(ctx context.Context, s *config.Service, old *ContainerState) error {
	return a.step(s.Name, "drain", fmt.Sprintf("let requests in flight on %s finish, up to %s", old.Name, s.Deploy.Drain), func() error {
		cut := 0
		for _, p := range s.Ports {
			addr, err := a.backendAddr(old, p.Container)
			if err != nil {
				continue // it never was behind the proxy
			}
			resp, err := a.ctl(ctx, proxy.Request{Op: "drain", Name: routeName(s, p), Backend: addr, Timeout: s.Deploy.Drain})
			if err != nil {
				return err
			}
			cut += resp.Cut
		}
		if cut > 0 {
			a.warn(s.Name, "%s still in flight on the old release at the drain deadline (%s) were cut", plural(cut, "request or connection"), s.Deploy.Drain)
		}
		return nil
	})
}

// ProxyStatus reports the proxy's routes with their counters (nil without a proxy).
func ProxyStatus(ctx context.Context, rt Runtime, project string) ([]proxy.RouteStatus, error) {
	obs, err := Observe(ctx, rt, project)
	if err != nil || obs.Proxy == nil || !obs.Proxy.Running() {
		return nil, err
	}
	return proxyRoutes(ctx, rt, obs.Proxy.ID)
}

// proxyRoutes asks a running proxy container for its routes and counters.
func proxyRoutes(ctx context.Context, rt Runtime, proxyID string) ([]proxy.RouteStatus, error) {
	a := &Applier{Runtime: rt, proxyID: proxyID}
	resp, err := a.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		return nil, err
	}
	return resp.Routes, nil
}
