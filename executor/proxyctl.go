package executor

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/proxy"
)

// proxyControl is the project's proxy for one run. It owns the proxy container's identity: it
// finds, starts or upgrades the proxy (ensure), and every request to the proxy goes through it.
type proxyControl struct {
	rn       *run
	id       string // the proxy container, once ensured in this run
	err      error  // why ensuring it failed in this run
	sessions proxy.Sessions
}

// ctl sends one request to the proxy: on a session (one docker exec for the run's requests),
// or, to a proxy whose deployer has none, through one docker exec of its own.
func (px *proxyControl) ctl(ctx context.Context, req proxy.Request) (*proxy.Response, error) {
	if px.id == "" {
		return nil, errors.New("the proxy is not running")
	}
	return px.sessions.Send(ctx, px.rn.Runtime, px.id, req)
}

// close ends the run's sessions with the proxy; a request after it has an exec of its own.
func (px *proxyControl) close() { px.sessions.Close() }

// ensure makes sure the project's proxy runs the current deployer, creating or upgrading it,
// then points every route at the live release of its service. Once done (or failed) in a run,
// it is not done again: resync does it again.
func (px *proxyControl) ensure(ctx context.Context) error {
	if px.id != "" || px.err != nil {
		return px.err
	}
	rn := px.rn
	px.err = rn.step("", plan.StepProxy, "", rn.plannedOr("", plan.StepProxy, "make sure the project's proxy runs and routes to the live releases"), func() error {
		if err := rn.own.ensureNetwork(ctx); err != nil {
			return err
		}
		image, err := rn.hp.helperImage(ctx)
		if err != nil {
			return err
		}
		obs, err := plan.Observe(ctx, rn.Runtime, rn.Project)
		if err != nil {
			return err
		}
		if err := px.finishUpgrade(ctx, obs); err != nil {
			return err
		}
		fresh := true
		if p := obs.Proxy; p != nil && p.ImageID == image {
			if !p.Running() {
				rn.warn("", "the proxy %s was %s: starting it", p.Name, p.State)
				if err := rn.Runtime.StartContainer(ctx, p.ID); err != nil {
					return err
				}
			} else {
				fresh = false // it answers the route status below, or wait there
			}
			px.id = p.ID
		} else if err := px.start(ctx, image, obs.Proxy); err != nil {
			return err
		}
		if fresh {
			if err := px.wait(ctx); err != nil {
				return err
			}
		}
		return px.sync(ctx, obs)
	})
	if px.err != nil {
		px.id = ""
	}
	return px.err
}

// resync ensures the proxy again: a release started again may have another address.
func (px *proxyControl) resync(ctx context.Context) error {
	px.id, px.err = "", nil
	px.sessions.Reset("") // the proxy may have been restarted: its sessions with it
	return px.ensure(ctx)
}

// start creates the proxy container; with an old one running (an upgrade), the new one takes
// the old one's listening sockets over (or, from a proxy too old for that, shares its ports)
// before the old one stops.
func (px *proxyControl) start(ctx context.Context, image string, old *Container) error {
	rn := px.rn
	name := plan.ProxyName(rn.Project.Name)
	cmd := []string{"proxy", "serve"}
	if old != nil {
		name += plan.ProxyNextSuffix
		// The proxy it replaces may be too old to hand its sockets over; then, and only for
		// it, the new one shares its ports (they were opened for sharing) until it stops.
		cmd = append(cmd, "--reuse-port")
	}
	spec := ContainerSpec{Name: name, Image: image, Cmd: cmd, HostNetwork: true, Restart: "unless-stopped",
		Labels:  map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelRole: plan.RoleProxy, plan.LabelCreatedAt: time.Now().UTC().Format(time.RFC3339)},
		Volumes: []VolumeMount{{Name: plan.ProxyStateVolume(rn.Project), Target: "/state"}}}
	if err := rn.own.makeVolume(ctx, plan.ProxyStateVolume(rn.Project), map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelRole: plan.RoleProxy}); err != nil {
		return err
	}
	id, err := rn.Runtime.CreateContainer(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		return rn.own.nameTaken(ctx, name, "the project's proxy")
	}
	if err != nil {
		return err
	}
	if err := rn.Runtime.StartContainer(ctx, id); err != nil {
		rn.Runtime.RemoveContainer(ctx, id)
		return err
	}
	px.id = id
	if old == nil {
		return nil
	}
	return px.takeOver(ctx, id, old)
}

// takeOver finishes an upgrade: the new proxy gets the old one's routes, then the old one stops
// (letting its requests finish) and goes, and the new one takes the name.
func (px *proxyControl) takeOver(ctx context.Context, id string, old *Container) error {
	rn := px.rn
	rn.log("", plan.StepProxy, "upgrading the proxy %s: the new one takes over its ports first", old.Name)
	if err := px.wait(ctx); err != nil {
		return err
	}
	rn.crash(plan.ProxyUpgradePoints[0])
	if old.Running() {
		// Copy the old proxy's routes, so both serve the same before the old one stops.
		if st, err := proxy.Exec(ctx, rn.Runtime, old.ID, proxy.Request{Op: "status"}); err == nil {
			for _, r := range st.Routes {
				rt := r.Route
				if _, err := px.ctl(ctx, proxy.Request{Op: "set", Route: &rt}); err != nil {
					return err
				}
			}
		}
		rn.Runtime.StopContainer(ctx, old.ID, 30*time.Second) // stops accepting, lets requests finish
		rn.crash(plan.ProxyUpgradePoints[1])
	}
	if err := rn.Runtime.RemoveContainer(ctx, old.ID); err != nil {
		return err
	}
	rn.crash(plan.ProxyUpgradePoints[2])
	return rn.Runtime.RenameContainer(ctx, id, plan.ProxyName(rn.Project.Name))
}

// finishUpgrade deals with what an upgrade of the proxy left when it was interrupted: a new
// proxy that serves alone takes the name; one beside an old proxy that still serves is removed,
// and the upgrade starts over.
func (px *proxyControl) finishUpgrade(ctx context.Context, obs *plan.Observed) error {
	rn := px.rn
	name := plan.ProxyName(rn.Project.Name)
	if n := obs.ProxyNext; n != nil {
		if obs.Proxy.Running() || !n.Running() {
			rn.warn("", "an interrupted upgrade of the proxy left %s beside %s, which still serves: removing it; the upgrade starts over", n.Name, obs.Proxy.Name)
			rn.Runtime.StopContainer(ctx, n.ID, 30*time.Second) // the old proxy keeps its sockets
			if err := rn.Runtime.RemoveContainer(ctx, n.ID); err != nil {
				return err
			}
			obs.ProxyNext = nil
			return nil
		}
		rn.warn("", "an interrupted upgrade of the proxy left %s serving and %s stopped: finishing it", n.Name, obs.Proxy.Name)
		if err := rn.Runtime.RemoveContainer(ctx, obs.Proxy.ID); err != nil {
			return err
		}
		obs.Proxy, obs.ProxyNext = n, nil
	}
	if p := obs.Proxy; p != nil && strings.HasSuffix(p.Name, plan.ProxyNextSuffix) {
		if err := rn.Runtime.RenameContainer(ctx, p.ID, name); err != nil {
			return err
		}
		p.Name = name
	}
	return nil
}

// wait waits for the proxy to answer.
func (px *proxyControl) wait(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := px.ctl(ctx, proxy.Request{Op: "ping"})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			logs, _ := px.rn.Runtime.Logs(ctx, px.id, logLines)
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

func candidateRouteName(s *config.Service, p *config.Port) string {
	return routeName(s, p) + plan.CandidateRouteSuffix
}

// showCandidate shows the candidate on 127.0.0.1:<candidate> for each fixed candidate port, as
// the seed's green was, until the deploy ends. It is a view for the operator, so a port that
// cannot be taken is a warning.
func (px *proxyControl) showCandidate(ctx context.Context, s *config.Service, cand *ContainerState) {
	for _, p := range s.Ports {
		if p.Candidate == 0 {
			continue
		}
		addr, err := px.rn.own.backendAddr(cand, p.Container)
		if err != nil {
			continue
		}
		_, err = px.ctl(ctx, proxy.Request{Op: "set", Route: &proxy.Route{Name: candidateRouteName(s, p), Listen: fmt.Sprintf("127.0.0.1:%d", p.Candidate), Protocol: p.Protocol, Backend: addr}})
		if err != nil {
			px.rn.warn(s.Name, "the candidate is not shown on 127.0.0.1:%d (%v); it is checked through the proxy all the same", p.Candidate, err)
		}
	}
}

// hideCandidate frees the candidate ports once a deploy or rollback ends, whatever its outcome.
func (px *proxyControl) hideCandidate(ctx context.Context, s *config.Service) {
	if px.id == "" {
		return
	}
	for _, p := range s.Ports {
		if p.Candidate != 0 {
			px.ctl(ctx, proxy.Request{Op: "remove", Name: candidateRouteName(s, p)})
		}
	}
}

// setRoutes points a service's routes at a release and returns the backends they had.
func (px *proxyControl) setRoutes(ctx context.Context, s *config.Service, c *ContainerState) (map[string]string, error) {
	prev := map[string]string{}
	for _, p := range s.Ports {
		addr, err := px.rn.own.backendAddr(c, p.Container)
		if err != nil {
			return prev, err
		}
		resp, err := px.ctl(ctx, proxy.Request{Op: "set", Route: &proxy.Route{Name: routeName(s, p), Listen: fmt.Sprintf(":%d", p.Host), Protocol: p.Protocol, Backend: addr}})
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

// sync points the routes of every service the proxy serves at its running live release,
// setting only those that differ from what the proxy has (each control request is a docker
// exec), and removes the candidate routes a killed apply left.
func (px *proxyControl) sync(ctx context.Context, obs *plan.Observed) error {
	rn := px.rn
	st, err := px.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		if err := px.wait(ctx); err != nil {
			return err
		}
		if st, err = px.ctl(ctx, proxy.Request{Op: "status"}); err != nil {
			return err
		}
	}
	have := map[string]proxy.Route{}
	for _, r := range st.Routes {
		if r.Held {
			// Held by a held migration whose apply was killed: this run holds the lock now.
			if _, err := px.ctl(ctx, proxy.Request{Op: "release", Name: r.Name}); err != nil {
				return err
			}
		}
		if strings.HasSuffix(r.Name, plan.CandidateRouteSuffix) {
			// Left by an apply that was killed: the candidate is gone, its port must be free.
			if _, err := px.ctl(ctx, proxy.Request{Op: "remove", Name: r.Name}); err != nil {
				return err
			}
			continue
		}
		have[r.Name] = r.Route
	}
	for _, s := range rn.Project.Services {
		st := obs.Services[s.Name]
		if st == nil || st.Live == nil || !st.Live.Running() {
			continue
		}
		// A live release the proxy serves is routed to, whatever the configuration says now,
		// until a restart cutover gives its ports to the new release.
		if !plan.PlanCutover(s, !rn.remote(), false).ServedByProxy() && !plan.RecordedCutover(*st.Live, false) && !hasRoute(s, have) {
			continue
		}
		live, err := rn.Runtime.Inspect(ctx, st.Live.ID)
		if err != nil {
			return err
		}
		if _, ok := live.IPs[plan.NetworkName(rn.Project.Name)]; !ok || plan.PublishesItself(s, live) {
			// A container being taken over, or a release of the restart cutover: it holds the
			// host port, which the proxy takes at its next cutover.
			continue
		}
		if px.routesMatch(s, live, have) {
			continue
		}
		if _, err := px.setRoutes(ctx, s, live); err != nil {
			return err
		}
	}
	return nil
}

// giveBackPorts removes the service's routes on the host ports that a stopped release
// publishes itself (a container being taken over, or a release of the restart cutover), so
// that it can start on them again: a switch to the proxy that was interrupted left them to the
// proxy, routed to a candidate that the next apply removes.
func (px *proxyControl) giveBackPorts(ctx context.Context, s *config.Service, id string) error {
	if px.id == "" {
		return nil // no proxy runs in this apply: it holds no port
	}
	c, err := px.rn.Runtime.Inspect(ctx, id)
	if err != nil {
		return err
	}
	published := map[int]bool{}
	for _, p := range c.Spec.Ports {
		published[p.HostPort] = true
	}
	if len(published) == 0 {
		return nil
	}
	st, err := px.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		return err
	}
	for _, p := range s.Ports {
		for _, r := range st.Routes {
			if r.Name != routeName(s, p) || !published[p.Host] {
				continue
			}
			px.rn.warn(s.Name, "the proxy holds host port %d for the service, as an interrupted switch to the proxy left it: it goes back to %s, which publishes it itself", p.Host, c.Name)
			if _, err := px.ctl(ctx, proxy.Request{Op: "remove", Name: r.Name}); err != nil {
				return err
			}
		}
	}
	return nil
}

// hasRoute reports whether the proxy has a route of the service.
func hasRoute(s *config.Service, have map[string]proxy.Route) bool {
	for _, p := range s.Ports {
		if _, ok := have[routeName(s, p)]; ok {
			return true
		}
	}
	return false
}

// takePorts removes the service's routes, so that a release of the restart cutover can publish
// its host ports itself; it reports whether the proxy had any.
func (px *proxyControl) takePorts(ctx context.Context, s *config.Service) (bool, error) {
	if px.id == "" {
		return false, nil // no proxy runs in this apply: it holds no port
	}
	st, err := px.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		return false, err
	}
	had := false
	for _, p := range s.Ports {
		for _, r := range st.Routes {
			if r.Name != routeName(s, p) {
				continue
			}
			if _, err := px.ctl(ctx, proxy.Request{Op: "remove", Name: r.Name}); err != nil {
				return had, err
			}
			had = true
		}
	}
	return had, nil
}

// routesMatch reports whether the proxy has every route of a service leading to c already.
func (px *proxyControl) routesMatch(s *config.Service, c *ContainerState, have map[string]proxy.Route) bool {
	for _, p := range s.Ports {
		addr, err := px.rn.own.backendAddr(c, p.Container)
		r, ok := have[routeName(s, p)]
		if err != nil || !ok || r.Backend != addr || r.Listen != fmt.Sprintf(":%d", p.Host) || r.Protocol != p.Protocol {
			return false
		}
	}
	return true
}

// routesOn fails when a route of the service no longer sends new requests to the release.
func (px *proxyControl) routesOn(ctx context.Context, s *config.Service, id string) error {
	st, err := px.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		return err
	}
	live, err := px.rn.Runtime.Inspect(ctx, id)
	if err != nil {
		return err
	}
	for _, p := range s.Ports {
		want, _ := px.rn.own.backendAddr(live, p.Container)
		for _, r := range st.Routes {
			if r.Name == routeName(s, p) && (r.FailedOver || r.Backend != want) {
				return fmt.Errorf("the proxy could not reach the new release and sent requests back to the previous one")
			}
		}
	}
	return nil
}

// drain lets a release finish what it has in flight, up to deploy.drain, then cuts the rest.
func (px *proxyControl) drain(ctx context.Context, s *config.Service, old *ContainerState) error {
	rn := px.rn
	return rn.step(s.Name, plan.StepDrain, "", fmt.Sprintf("let requests in flight on %s finish, up to %s", old.Name, s.Deploy.Drain), func() error {
		cut := 0
		for _, p := range s.Ports {
			addr, err := rn.own.backendAddr(old, p.Container)
			if err != nil {
				continue // it never was behind the proxy
			}
			resp, err := px.ctl(ctx, proxy.Request{Op: "drain", Name: routeName(s, p), Backend: addr, Timeout: s.Deploy.Drain})
			if err != nil {
				return err
			}
			cut += resp.Cut
		}
		if cut > 0 {
			rn.warn(s.Name, "%s still in flight on the old release at the drain deadline (%s) were cut", plan.Plural(cut, "request or connection"), s.Deploy.Drain)
		}
		return nil
	})
}

// drainLeftover lets a running container that an interrupted apply left (a candidate the proxy
// routed to after a killed cutover, an old release set aside before its drain) finish its
// requests in flight, up to deploy.drain, before it is removed or stopped; the proxy step routed
// the service back to its live release first. The proxy then forgets the container's address:
// its kept-alive connections would otherwise meet the next release given that address. A route
// that still leads to the container (no live release runs to route to) is left as it is.
func (px *proxyControl) drainLeftover(ctx context.Context, s *config.Service, id string) {
	rn := px.rn
	if px.id == "" {
		return // no proxy runs in this apply
	}
	c, err := rn.Runtime.Inspect(ctx, id)
	if err != nil || !c.Running {
		return
	}
	st, err := px.ctl(ctx, proxy.Request{Op: "status"})
	if err != nil {
		rn.warn(s.Name, "the proxy's routes were not read (%v): %s goes without a drain", err, c.Name)
		return
	}
	start, cut := time.Now(), 0
	for _, p := range s.Ports {
		addr, err := rn.own.backendAddr(c, p.Container)
		if err != nil {
			continue // it never was behind the proxy
		}
		for _, r := range st.Routes {
			if r.Name != routeName(s, p) || r.Backend == addr {
				continue
			}
			resp, err := px.ctl(ctx, proxy.Request{Op: "drain", Name: r.Name, Backend: addr, Timeout: s.Deploy.Drain})
			if err != nil {
				rn.warn(s.Name, "drain of %s: %v", c.Name, err)
				continue
			}
			cut += resp.Cut
		}
	}
	if cut > 0 {
		rn.warn(s.Name, "%s still in flight on %s at the drain deadline (%s) were cut", plan.Plural(cut, "request or connection"), c.Name, s.Deploy.Drain)
	} else if took := time.Since(start); took > 100*time.Millisecond {
		rn.log(s.Name, plan.StepDrain, "the requests in flight on %s finished (%s)", c.Name, took.Round(time.Millisecond))
	}
}

// ProxyStatus reports the proxy's routes with their counters (nil without a proxy).
func ProxyStatus(ctx context.Context, rt Runtime, p *config.Project) ([]proxy.RouteStatus, error) {
	obs, err := plan.Observe(ctx, rt, p)
	if err != nil || obs.Proxy == nil || !obs.Proxy.Running() {
		return nil, err
	}
	return proxyRoutes(ctx, rt, obs.Proxy.ID)
}

// readProxyRoutes is plan's and status's RouteReader: the routes of a running proxy container.
func readProxyRoutes(ctx context.Context, eng Engine, proxyID string) ([]plan.Route, error) {
	rt, ok := eng.(Runtime)
	if !ok {
		return nil, errors.New("the engine runs no commands in containers: the proxy's routes cannot be read")
	}
	list, err := proxyRoutes(ctx, rt, proxyID)
	var out []plan.Route
	for _, r := range list {
		out = append(out, plan.Route{Name: r.Name, Backend: r.Backend})
	}
	return out, err
}

// proxyRoutes asks a running proxy container for its routes and counters.
func proxyRoutes(ctx context.Context, rt Runtime, proxyID string) ([]proxy.RouteStatus, error) {
	resp, err := proxy.Exec(ctx, rt, proxyID, proxy.Request{Op: "status"})
	if err != nil {
		return nil, err
	}
	return resp.Routes, nil
}
