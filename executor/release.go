package executor

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/deployer-dev/deployer/executor/plan"

	"github.com/deployer-dev/deployer/config"
)

// release is what a new live container is created from: the configuration (a deploy) or an
// earlier release's container (a rollback).
type release struct {
	number  int
	imageID string
	image   string
	cmd     []string
	env     map[string]string
	volumes []VolumeMount
	ports   []*config.Port
	labels  map[string]string
	network string
	// host settings: init, resources and log options, carried by every container of it.
	host ContainerSpec
	// origin says whether the deployer made the image (built or pulled it) or found it.
	origin string
}

// newRelease is the release a deploy makes of the configuration; its image and labels come
// with the image step.
func newRelease(p *config.Project, s *config.Service, number int) *release {
	r := &release{number: number, image: s.Image, cmd: s.Command, env: s.Env, ports: s.Ports, network: plan.NetworkName(p.Name), host: hostSettings(s)}
	for _, v := range s.Volumes {
		r.volumes = append(r.volumes, VolumeMount{Name: v.Name, Target: v.Target})
	}
	return r
}

// earlierRelease is the release a rollback brings back, from its stopped container.
func earlierRelease(p *config.Project, s *config.Service, c *Container, prev *ContainerState) *release {
	r := &release{number: c.Release(), imageID: prev.ImageID, image: c.Image, cmd: prev.Spec.Cmd, env: prev.Spec.Env,
		volumes: prev.Spec.Volumes, ports: s.Ports, labels: withRole(prev.Spec.Labels, plan.RoleCandidate), network: plan.NetworkName(p.Name),
		host: ContainerSpec{Init: prev.Spec.Init, Memory: prev.Spec.Memory, NanoCPUs: prev.Spec.NanoCPUs, LogOpts: prev.Spec.LogOpts}}
	r.labels[LabelLiveName] = s.ContainerName
	r.labels[LabelCreatedAt] = time.Now().UTC().Format(time.RFC3339)
	return r
}

// hostSettings are the service's init, resources and log options as a release carries them.
func hostSettings(s *config.Service) ContainerSpec {
	h := ContainerSpec{Init: s.Init}
	if r := s.Resources; r != nil {
		h.Memory, h.NanoCPUs = r.Memory, int64(r.CPUs*1e9)
	}
	if l := s.Log; l != nil {
		h.LogOpts = map[string]string{}
		if l.MaxSize != "" {
			h.LogOpts["max-size"] = l.MaxSize
		}
		if l.MaxFiles > 0 {
			h.LogOpts["max-file"] = strconv.Itoa(l.MaxFiles)
		}
	}
	return h
}

// labels are what a new release's containers record of it.
func (rn *run) labels(s *config.Service, role string, number int, doc map[string]string, imageID, contextHash, origin string) map[string]string {
	raw, _ := json.Marshal(doc)
	l := map[string]string{
		LabelProject: rn.Project.Name, LabelService: s.Name, LabelRole: role, LabelRelease: strconv.Itoa(number),
		LabelSpecDoc: string(raw), LabelSpec: plan.SpecHash(doc, imageID), LabelCreatedAt: time.Now().UTC().Format(time.RFC3339),
		LabelImage: s.Image, LabelLiveName: s.ContainerName,
	}
	if contextHash != "" {
		l[LabelContextHash] = contextHash
	}
	if origin != "" {
		l[LabelImageOrigin] = origin
	}
	if rn.Source != "" {
		l[LabelSource] = rn.Source
	}
	if rn.engine != "" {
		engines := map[string]string{}
		for _, e := range s.EngineNames() {
			engines[e] = rn.Project.Docker.Host
			if eb := rn.Project.Engines[e]; eb != nil {
				engines[e] = eb.Host
			}
		}
		raw, _ := json.Marshal(engines)
		l[LabelEngines] = string(raw)
	}
	return l
}

func withRole(labels map[string]string, role string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		out[k] = v
	}
	out[LabelRole] = role
	return out
}

// spec is the container of the release: the candidate (ports on 127.0.0.1) or the live one.
func (r *release) spec(name, role string, candidate bool) ContainerSpec {
	cs := ContainerSpec{Name: name, Image: r.imageID, Cmd: r.cmd, Env: r.env, Volumes: r.volumes, Labels: withRole(r.labels, role), Network: r.network,
		Init: r.host.Init, Memory: r.host.Memory, NanoCPUs: r.host.NanoCPUs, LogOpts: r.host.LogOpts}
	for _, p := range r.ports {
		if candidate {
			cs.Ports = append(cs.Ports, PortBinding{Container: p.Container, HostIP: "127.0.0.1", HostPort: p.Candidate})
		} else {
			cs.Ports = append(cs.Ports, PortBinding{Container: p.Container, HostPort: p.Host})
		}
	}
	if role == plan.RoleLive {
		cs.Restart = "unless-stopped"
	}
	return cs
}
