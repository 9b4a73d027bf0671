package plan

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/engine"
)

// Takeover is a container of the service's name that the deployer did not make.
type Takeover struct {
	ID      string   `json:"id"`
	Name    string   `json:"container"`
	Image   string   `json:"image"`
	ImageID string   `json:"image_id"`
	State   string   `json:"state"`
	Made    string   `json:"made_by"` // docker-compose project "x" service "y", or docker run
	Ports   []string `json:"ports,omitempty"`
	Volumes []string `json:"volumes,omitempty"`
	Release int      `json:"release"` // the release number it is kept as
	// SetAside: a takeover interrupted after the new release went live left it under its
	// set-aside name; apply keeps it as the previous release, or removes it when its copy was
	// kept already (Kept).
	SetAside bool `json:"set_aside,omitempty"`
	Kept     bool `json:"kept,omitempty"`

	Doc map[string]string `json:"-"` // its spec, as the deployer records specs
}

// madeBy says how a container the deployer did not make was made.
func madeBy(labels map[string]string) string {
	if p := labels["com.docker.compose.project"]; p != "" {
		return fmt.Sprintf("docker-compose project %q service %q", p, labels["com.docker.compose.service"])
	}
	return "docker run"
}

// volumesMatch refuses a takeover that would leave data behind: a configured target where the
// container mounts another volume (compose prefixes volume names with its project) or a host
// directory.
func volumesMatch(s *config.Service, st *engine.ContainerState) error {
	var problems []string
	for _, v := range s.Volumes {
		for _, m := range st.Spec.Volumes {
			if m.Target == v.Target && m.Name != v.Name {
				problems = append(problems, fmt.Sprintf("it mounts volume %q at %s, where the configuration mounts %q: to keep its data, write volume %q { target = %q }", m.Name, v.Target, v.Name, m.Name, v.Target))
			}
		}
		for _, b := range st.Binds {
			if b.Target == v.Target {
				problems = append(problems, fmt.Sprintf("it mounts the host directory %s at %s, where the configuration mounts volume %q: copy that directory into the volume first (the deployer deploys named volumes)", b.Name, v.Target, v.Name))
			}
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("service.%s: container %s, which runs without the deployer, cannot be taken over as it is: %s; nothing was changed", s.Name, st.Name, strings.Join(problems, "; "))
}

// ForeignDoc is a foreign container's spec in the attributes the deployer records, for the
// plan's diff: image, command, environment (what the image does not set itself), ports and
// volumes. Everything else the deployer adds is new.
func ForeignDoc(s *config.Service, st *engine.ContainerState, image string, imageEnv map[string]string) map[string]string {
	doc := map[string]string{"container_name": jsonString(st.Name), "image": jsonString(image)}
	if len(st.Spec.Cmd) > 0 {
		b, _ := json.Marshal(st.Spec.Cmd)
		doc["command"] = string(b)
	}
	for k, v := range st.Spec.Env {
		if iv, ok := imageEnv[k]; ok && iv == v {
			continue
		}
		doc["env."+k] = jsonString(v)
	}
	for _, p := range st.Spec.Ports {
		doc["port."+strconv.Itoa(p.Container)+".host"] = strconv.Itoa(p.HostPort)
	}
	for _, v := range st.Spec.Volumes {
		doc["volume."+v.Name+".target"] = jsonString(v.Target)
	}
	return doc
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// takeoverKeys are the attributes a foreign container's doc can say anything about.
func takeoverKey(k string) bool {
	for _, p := range []string{"container_name", "image", "command", "env.", "port.", "volume."} {
		if strings.HasPrefix(k, p) {
			return !strings.HasSuffix(k, ".candidate") && !strings.HasSuffix(k, ".protocol")
		}
	}
	return false
}

// foreign finds a container of the service's name that no deployer project made, or the one an
// interrupted takeover set aside under <name>-old-N: the release made to replace it recorded
// its ID (LabelTakeoverOf), and its number is the one before that release's. Any other
// container of a set-aside name is not taken over (the name checks refuse it). A container of
// the service's name made by another project is an error: container names are the engine's,
// not the project's.
func (pl *planner) foreign(s *config.Service) (*engine.Container, error) {
	var found *engine.Container
	for i := range pl.all {
		c := &pl.all[i]
		switch proj := c.Labels[engine.LabelProject]; {
		case proj == pl.p.Name:
			continue
		case c.Name == s.ContainerName && proj != "":
			return nil, fmt.Errorf("service.%s: the container name %s is taken by project %q's service.%s: set another container_name", s.Name, c.Name, proj, c.Labels[engine.LabelService])
		case proj != "":
			continue
		case c.Name == s.ContainerName:
			return c, nil
		case found == nil && strings.HasPrefix(c.Name, s.ContainerName+"-old-") && pl.obs.setAsideByTakeover(*c):
			found = c
		}
	}
	return found, nil
}

// takeover describes a foreign container for the plan and checks that it can be taken over: its
// volumes must be the configured ones at the configured targets, or its data would be left
// behind.
func (pl *planner) takeover(s *config.Service, c *engine.Container, release int) (*Takeover, error) {
	st, err := pl.eng.Inspect(pl.ctx, c.ID)
	if err != nil {
		return nil, err
	}
	t := &Takeover{ID: st.ID, Name: st.Name, Image: c.Image, ImageID: st.ImageID, State: st.Status, Release: release, Made: madeBy(st.Spec.Labels)}
	for _, p := range st.Spec.Ports {
		t.Ports = append(t.Ports, fmt.Sprintf("%d->%d", p.HostPort, p.Container))
	}
	for _, v := range st.Spec.Volumes {
		t.Volumes = append(t.Volumes, v.Name+":"+v.Target)
	}
	if err := volumesMatch(s, st); err != nil {
		return nil, err
	}
	imageEnv, _ := pl.eng.ImageEnv(pl.ctx, st.ImageID)
	t.Doc = ForeignDoc(s, st, c.Image, imageEnv)
	return t, nil
}
