package executor

import (
	"fmt"

	"github.com/deployer-dev/deployer/config"
)

// cutoverPlan is what is known of a service's cutover before anything runs, built from the
// service alone: what the plan says of the candidate and the switch, the kill points inside
// them, and whether a deploy needs the project's proxy. The cutover (cutover.go) carries it out.
type cutoverPlan struct {
	s     *config.Service
	proxy bool // the proxy cutover; else the restart cutover
	local bool // the engine is on this machine
	// adopting: the live release is a container being taken over; it is on no network of
	// the project and publishes its ports itself.
	adopting bool
}

func planCutover(s *config.Service, local, adopting bool) cutoverPlan {
	return cutoverPlan{s: s, proxy: s.Deploy.Cutover == config.CutoverProxy, local: local, adopting: adopting}
}

// servedByProxy reports whether the live release's traffic comes through the project's proxy.
func (c cutoverPlan) servedByProxy() bool { return c.proxy }

// needsProxy reports whether a deploy needs the proxy running: for the traffic, or for its
// health checks (those of a remote engine run from the proxy, on the engine's host).
func (c cutoverPlan) needsProxy() bool { return c.proxy || !c.local }

// takingOver reports whether the live release is a container being taken over.
func (c cutoverPlan) takingOver() bool { return c.adopting }

// port is the port the plan shows the candidate on: the HTTP one, else the first.
func (c cutoverPlan) port() *config.Port {
	port := c.s.HTTPPort()
	if port == nil && len(c.s.Ports) > 0 {
		port = c.s.Ports[0]
	}
	return port
}

// candidateWhere is what the plan says of where the candidate is reached.
func (c cutoverPlan) candidateWhere() string {
	port := c.port()
	switch {
	case port == nil:
		return ", no published port"
	case port.Candidate == 0 && c.proxy:
		return ", reached through the proxy"
	case port.Candidate == 0:
		return " on 127.0.0.1:(a free port)"
	case c.proxy:
		return fmt.Sprintf("; the proxy shows it on 127.0.0.1:%d until the deploy ends", port.Candidate)
	}
	return fmt.Sprintf(" on 127.0.0.1:%d", port.Candidate)
}

// switchText is what the plan says of the cutover step.
func (c cutoverPlan) switchText(ch *Change) string {
	s := c.s
	switch {
	case ch.Action == ActionCreate:
		return fmt.Sprintf("start release %d as %s on %s", ch.NextRelease, s.ContainerName, hostPortList(s))
	case ch.Action == ActionTakeover && c.proxy:
		return fmt.Sprintf("stop %s, which publishes %s itself, and give the port to the proxy, routed to release %d: this one switch has a window without service, as long as a restart's", ch.Takeover.Name, hostPortList(s), ch.NextRelease)
	case ch.Action == ActionTakeover:
		return fmt.Sprintf("restart: stop %s (up to %s), start release %d as %s on %s", ch.Takeover.Name, dur(s.Deploy.StopTimeout), ch.NextRelease, s.ContainerName, hostPortList(s))
	case c.proxy && ch.PortHandover == HandoverToProxy:
		return fmt.Sprintf("stop release %d (%s), which publishes %s itself (restart cutover), and give the port to the proxy, routed to release %d: this one switch to the proxy has a window without service, as long as a restart's", ch.LiveRelease, ch.Container, hostPortList(s), ch.NextRelease)
	case c.proxy:
		return fmt.Sprintf("proxy: route new requests on %s to release %d, drain release %d for up to %s, then stop it", hostPortList(s), ch.NextRelease, ch.LiveRelease, dur(s.Deploy.Drain))
	case ch.PortHandover == HandoverFromProxy:
		return fmt.Sprintf("restart: stop release %d (%s, up to %s), which the proxy serves, take %s from the proxy, start release %d as %s on it, publishing it itself", ch.LiveRelease, ch.Container, dur(s.Deploy.StopTimeout), hostPortList(s), ch.NextRelease, s.ContainerName)
	}
	return fmt.Sprintf("restart: stop release %d (%s, up to %s), start release %d as %s on %s", ch.LiveRelease, ch.Container, dur(s.Deploy.StopTimeout), ch.NextRelease, s.ContainerName, hostPortList(s))
}

// points are the kill points inside the cutover step.
func (c cutoverPlan) points(ch *Change) []string {
	switch {
	case c.proxy:
		return []string{PointCutoverSwitched, PointCutoverSetAside}
	case ch.Action == ActionCreate:
		return []string{PointCutoverCreated}
	}
	return []string{PointCutoverStopped, PointCutoverRenamed, PointCutoverCreated}
}

// retirePoints are the kill points inside the clean-up before the old release is kept.
func (c cutoverPlan) retirePoints() []string {
	if c.proxy {
		return []string{PointDrain}
	}
	return nil
}

// holdText says what users see during a held migration.
func (c cutoverPlan) holdText() string {
	if c.proxy {
		return fmt.Sprintf("new requests held by the proxy (up to hold_timeout, %s)", dur(c.s.Migration.HoldTimeout))
	}
	return fmt.Sprintf("the service down (up to hold_timeout, %s)", dur(c.s.Migration.HoldTimeout))
}
