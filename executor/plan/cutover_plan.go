package plan

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/deployer-dev/deployer/config"
)

// CutoverPlan is what is known of a service's cutover before anything runs, built from the
// service alone: what the plan says of the candidate and the switch, the kill points inside
// them, and whether a deploy needs the project's proxy. The cutover (cutover.go) carries it out.
type CutoverPlan struct {
	Service *config.Service
	Proxy   bool // the proxy cutover; else the restart cutover
	local   bool // the engine is on this machine
	// Adopting: the live release is a container being taken over; it is on no network of
	// the project and publishes its ports itself.
	Adopting bool
}

func PlanCutover(s *config.Service, local, adopting bool) CutoverPlan {
	return CutoverPlan{Service: s, Proxy: s.Deploy.Cutover == config.CutoverProxy, local: local, Adopting: adopting}
}

// ServedByProxy reports whether the live release's traffic comes through the project's proxy.
func (c CutoverPlan) ServedByProxy() bool { return c.Proxy }

// NeedsProxy reports whether a deploy needs the proxy running: for the traffic, or for its
// health checks (those of a remote engine run from the proxy, on the engine's host).
func (c CutoverPlan) NeedsProxy() bool { return c.Proxy || !c.local }

// TakingOver reports whether the live release is a container being taken over.
func (c CutoverPlan) TakingOver() bool { return c.Adopting }

// port is the port the plan shows the candidate on: the HTTP one, else the first.
func (c CutoverPlan) port() *config.Port {
	port := c.Service.HTTPPort()
	if port == nil && len(c.Service.Ports) > 0 {
		port = c.Service.Ports[0]
	}
	return port
}

// candidateWhere is what the plan says of where the candidate is reached.
func (c CutoverPlan) candidateWhere() string {
	port := c.port()
	switch {
	case port == nil:
		return ", no published port"
	case port.Candidate == 0 && c.Proxy:
		return ", reached through the proxy"
	case port.Candidate == 0:
		return " on 127.0.0.1:(a free port)"
	case c.Proxy:
		return fmt.Sprintf("; the proxy shows it on 127.0.0.1:%d until the deploy ends", port.Candidate)
	}
	return fmt.Sprintf(" on 127.0.0.1:%d", port.Candidate)
}

// switchText is what the plan says of the cutover step.
func (c CutoverPlan) switchText(ch *Change) string {
	s := c.Service
	switch {
	case ch.Action == ActionCreate:
		return fmt.Sprintf("start release %d as %s on %s", ch.NextRelease, s.ContainerName, hostPortList(s))
	case ch.Action == ActionTakeover && c.Proxy:
		return fmt.Sprintf("stop %s, which publishes %s itself, and give the port to the proxy, routed to release %d: this one switch has a window without service, as long as a restart's", ch.Takeover.Name, hostPortList(s), ch.NextRelease)
	case ch.Action == ActionTakeover:
		return fmt.Sprintf("restart: stop %s (up to %s), start release %d as %s on %s", ch.Takeover.Name, Dur(s.Deploy.StopTimeout), ch.NextRelease, s.ContainerName, hostPortList(s))
	case c.Proxy && ch.PortHandover == HandoverToProxy:
		return fmt.Sprintf("stop release %d (%s), which publishes %s itself (restart cutover), and give the port to the proxy, routed to release %d: this one switch to the proxy has a window without service, as long as a restart's", ch.LiveRelease, ch.Container, hostPortList(s), ch.NextRelease)
	case c.Proxy:
		return fmt.Sprintf("proxy: route new requests on %s to release %d, drain release %d for up to %s, then stop it", hostPortList(s), ch.NextRelease, ch.LiveRelease, Dur(s.Deploy.Drain))
	case ch.PortHandover == HandoverFromProxy:
		return fmt.Sprintf("restart: stop release %d (%s, up to %s), which the proxy serves, take %s from the proxy, start release %d as %s on it, publishing it itself", ch.LiveRelease, ch.Container, Dur(s.Deploy.StopTimeout), hostPortList(s), ch.NextRelease, s.ContainerName)
	}
	return fmt.Sprintf("restart: stop release %d (%s, up to %s), start release %d as %s on %s", ch.LiveRelease, ch.Container, Dur(s.Deploy.StopTimeout), ch.NextRelease, s.ContainerName, hostPortList(s))
}

// points are the kill points inside the cutover step.
func (c CutoverPlan) points(ch *Change) []string {
	switch {
	case c.Proxy:
		return []string{PointCutoverSwitched, PointCutoverSetAside}
	case ch.Action == ActionCreate:
		return []string{PointCutoverCreated}
	}
	return []string{PointCutoverStopped, PointCutoverRenamed, PointCutoverCreated}
}

// retirePoints are the kill points inside the clean-up before the old release is kept.
func (c CutoverPlan) retirePoints() []string {
	if c.Proxy {
		return []string{PointDrain}
	}
	return nil
}

// HoldText says what users see during a held migration.
func (c CutoverPlan) HoldText() string {
	if c.Proxy {
		return fmt.Sprintf("new requests held by the proxy (up to hold_timeout, %s)", Dur(c.Service.Migration.HoldTimeout))
	}
	return fmt.Sprintf("the service down (up to hold_timeout, %s)", Dur(c.Service.Migration.HoldTimeout))
}

// LocalEngine reports whether an engine address is on this machine, where the deployer reaches
// the ports candidates publish on 127.0.0.1.
func LocalEngine(host string) bool {
	u, err := url.Parse(host)
	if err != nil || host == "" || u.Scheme == "unix" || u.Scheme == "npipe" {
		return true
	}
	h := u.Hostname()
	if ip, err := netip.ParseAddr(h); err == nil && ip.IsLoopback() {
		return true
	}
	return h == "" || h == "localhost"
}

func hostPortList(s *config.Service) string {
	if len(s.Ports) == 0 {
		return "no published port"
	}
	var parts []string
	for _, p := range s.Ports {
		parts = append(parts, fmt.Sprintf(":%d", p.Host))
	}
	return strings.Join(parts, ", ")
}
