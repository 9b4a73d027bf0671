package plan

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// A host port belongs to one project. Before anything changes, plan and apply look at what
// holds each port a service needs: a container that publishes it, or another project's proxy,
// which routes the ports its services declare. Anything that is not this service's own (its
// releases, its candidate, the project's proxy, or the container it takes over) is named, and
// the deploy stops there: otherwise users' requests would be split between two services, or
// the cutover would fail half-way.

// portClaim is something that holds, or will hold, a host port.
type portClaim struct {
	port  int
	owner engine.Container
	via   string // "publishes it", "routes it through its proxy"
}

// CheckPorts fails when a port the project's services need is held by something else.
func CheckPorts(ctx context.Context, eng engine.Engine, p *config.Project, services []string) error {
	all, err := eng.AllContainers(ctx)
	if err != nil {
		return err
	}
	return portConflicts(p, services, all)
}

func portConflicts(p *config.Project, services []string, all []engine.Container) error {
	obs := observe(p, all)
	claims := map[int][]portClaim{}
	for _, c := range all {
		if c.Running() {
			for _, pub := range c.Published {
				claims[pub.HostPort] = append(claims[pub.HostPort], portClaim{pub.HostPort, c, "publishes it"})
			}
		}
		if proj := c.Labels[engine.LabelProject]; proj != "" && proj != p.Name && isLive(c) {
			for _, port := range proxiedPorts(c) {
				claims[port] = append(claims[port], portClaim{port, c, "routes it through its proxy"})
			}
		}
	}
	var problems []string
	for _, name := range services {
		s := p.Service(name)
		if s == nil {
			continue
		}
		for _, port := range s.Ports {
			for _, use := range []struct {
				n    int
				what string
			}{{port.Host, "host"}, {port.Candidate, "candidate"}} {
				if use.n == 0 {
					continue
				}
				for _, cl := range claims[use.n] {
					if ownedBy(p, s, cl.owner, obs) {
						continue
					}
					who := DescribeOwner(cl.owner)
					if cl.owner.Labels[engine.LabelProject] == p.Name {
						who = obs.notOwn(cl.owner)
					}
					problems = append(problems, fmt.Sprintf("%s port %d of service.%s is taken: %s %s", use.what, use.n, s.Name, who, cl.via))
				}
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return fmt.Errorf("%s; nothing was changed. A port serves one project: stop what holds it, or choose another port", strings.Join(dedupe(problems), "; "))
}

// ownedBy reports whether a container holding a port is the service's own: one of its releases,
// candidates or one-off containers, the project's proxy, or the running container the service
// takes over (named as its container_name, made by someone else). A container labelled for the
// project that is none of its own (Observed.Ignored) is named like anything else.
func ownedBy(p *config.Project, s *config.Service, c engine.Container, obs *Observed) bool {
	if c.Labels[engine.LabelProject] == p.Name {
		return obs.own(c.ID) && (c.Labels[engine.LabelService] == s.Name || c.Role() == RoleProxy)
	}
	return c.Labels[engine.LabelProject] == "" && c.Name == s.ContainerName
}

// isLive reports whether a container of another project is its service's live release.
func isLive(c engine.Container) bool {
	if ln := c.Labels[engine.LabelLiveName]; ln != "" {
		return c.Name == ln
	}
	return c.Role() == RoleLive
}

// proxiedPorts are the host ports a live release's proxy routes to it, from its recorded spec.
func proxiedPorts(c engine.Container) []int {
	var doc map[string]string
	if json.Unmarshal([]byte(c.Labels[engine.LabelSpecDoc]), &doc) != nil || doc["deploy.cutover"] != `"proxy"` {
		return nil
	}
	var out []int
	for k, v := range doc {
		if strings.HasPrefix(k, "port.") && strings.HasSuffix(k, ".host") {
			if n, err := strconv.Atoi(v); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// DescribeOwner names a container for an operator: the deployer's by project and service, a
// compose service by its project, anything else by name and image.
func DescribeOwner(c engine.Container) string {
	l := c.Labels
	switch {
	case l[engine.LabelProject] != "" && c.Role() == RoleProxy:
		return fmt.Sprintf("project %q's proxy (container %s)", l[engine.LabelProject], c.Name)
	case l[engine.LabelProject] != "":
		return fmt.Sprintf("project %q's service.%s (container %s, release %s)", l[engine.LabelProject], l[engine.LabelService], c.Name, l[engine.LabelRelease])
	case l["com.docker.compose.project"] != "":
		return fmt.Sprintf("docker-compose project %q's service %q (container %s)", l["com.docker.compose.project"], l["com.docker.compose.service"], c.Name)
	}
	return fmt.Sprintf("container %s (image %s)", c.Name, c.Image)
}

func dedupe(list []string) []string {
	var out []string
	for i, s := range list {
		if i == 0 || s != list[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// PublishesItself reports whether a container publishes one of the service's host ports
// itself, as a release of the restart cutover or a container being taken over does: the proxy
// cannot listen there while it runs.
func PublishesItself(s *config.Service, c *engine.ContainerState) bool {
	for _, b := range c.Spec.Ports {
		for _, p := range s.Ports {
			if b.HostPort == p.Host {
				return true
			}
		}
	}
	return false
}
