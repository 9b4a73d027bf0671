package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/migrate"
	"github.com/deployer-dev/deployer/executor/plan"
	"github.com/deployer-dev/deployer/executor/selfimage"
)

// helpers run the deployer's helper image in one-off containers on the engine: snapshots,
// clones and copies of volumes, schema reads, file reads and writes in a volume. image is the
// helper image's ID, once found or built.
type helpers struct {
	rn    *run
	image string
}

// helperImage is the image the proxy and restores run in: docker.proxy_image when the
// configuration names one, else one built (once per binary) from the deployer's own binary,
// FROM scratch, when that binary can run on the engine.
func (hp *helpers) helperImage(ctx context.Context) (string, error) {
	rn := hp.rn
	if hp.image != "" {
		return hp.image, nil
	}
	if ref := rn.Project.Docker.ProxyImage; ref != "" {
		if id, err := rn.Runtime.ImageID(ctx, ref); err == nil {
			return id, nil
		}
		id, err := rn.Runtime.PullImage(ctx, ref, rn.registries(), nil)
		if err != nil {
			return "", fmt.Errorf("docker.proxy_image %q: %w", ref, err)
		}
		return id, nil
	}
	osName, arch, err := rn.Runtime.Platform(ctx)
	if err != nil {
		return "", err
	}
	why := errors.New("the deployer does not know where its own binary is")
	var self *selfimage.Binary
	if rn.SelfBinary != "" {
		self, why = selfimage.Of(rn.SelfBinary, osName, arch)
	}
	if why != nil {
		alt := "(deploys with cutover = \"restart\" do without it on a local engine; restores always need it)"
		if rn.remote() {
			alt = "(on a remote engine every deploy needs it: the health checks run from the proxy, on the engine's host)"
		}
		return "", fmt.Errorf("the proxy and restores run the deployer itself in a container, and this one cannot run on the engine: %v.\n"+
			"Build a deployer for the engine (in a checkout of its source) and name its image in the configuration:\n"+
			"  GOOS=%s GOARCH=%s CGO_ENABLED=0 go build -o deployer ./cmd/deployer\n"+
			"  printf 'FROM scratch\\nCOPY deployer /deployer\\nENTRYPOINT [\"/deployer\"]\\n' | docker build -t deployer-proxy:%s -f - .\n"+
			"  docker { proxy_image = \"deployer-proxy:%s\" }   # in the configuration (push it to your registry for a remote engine)\n"+
			"%s", why, osName, arch, hp.versionTag(), hp.versionTag(), alt)
	}
	id, err := hp.loadSelfImage(ctx, self, arch)
	if err == nil {
		hp.image = id
	}
	return id, err
}

// The helper image is loaded, not built: its archive (docker save's format) is a function of
// the files alone (one layer holding them in name order, owned by root and dated 1970, and a
// configuration without a date), so the digest of its layer is known here before the engine is
// asked. An image is used as the helper only when it is made of exactly that layer and that
// configuration: its tag (deployer-helper:<digest>) can be moved by anyone who can use the
// engine, and the proxy and restores run it with the host's network and the services' data.

// loadSelfImage makes sure the engine has the helper image of this deployer (loading it when
// the engine has none that is exactly it) and returns its ID.
func (hp *helpers) loadSelfImage(ctx context.Context, self *selfimage.Binary, arch string) (string, error) {
	rn := hp.rn
	layer, err := selfimage.NewLayer(self)
	if err != nil {
		return "", err
	}
	tag := "deployer-helper:" + strings.TrimPrefix(layer.DiffID, "sha256:")[:12]
	if c, err := rn.Runtime.ImageContent(ctx, tag); err == nil && selfimage.IsHelper(c, layer.DiffID, arch) {
		return c.ID, nil
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return "", err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(layer.Archive(pw, arch, tag)) }()
	err = rn.Runtime.LoadImage(ctx, pr)
	pr.Close()
	if err != nil {
		return "", fmt.Errorf("load the helper image %s: %w", tag, err)
	}
	c, err := rn.Runtime.ImageContent(ctx, tag)
	if err != nil {
		return "", fmt.Errorf("the helper image %s: %w", tag, err)
	}
	if !selfimage.IsHelper(c, layer.DiffID, arch) {
		return "", fmt.Errorf("the tag %s was moved to another image right after the deployer loaded its helper image there: something on the engine moves it; run again, and find out what", tag)
	}
	return c.ID, nil
}

// versionTag is the deployer's version as an image tag.
func (hp *helpers) versionTag() string {
	rn := hp.rn
	v := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '-'
	}, rn.Version)
	if v == "" {
		return "latest"
	}
	return v
}

// helperRun runs a helper or one-off container to its end within deadline and removes it. It
// returns the exit code and the container's last output.
func (hp *helpers) helperRun(ctx context.Context, spec ContainerSpec, deadline time.Duration) (int, string, error) {
	rn := hp.rn
	id, err := hp.oneOffContainer(ctx, spec)
	if err != nil {
		return 0, "", err
	}
	defer rn.Runtime.RemoveContainer(context.WithoutCancel(ctx), id)
	wctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	if err := rn.Runtime.StartContainer(wctx, id); err != nil {
		return 0, "", err
	}
	code, err := rn.Runtime.Wait(wctx, id)
	if err != nil {
		rn.Runtime.StopContainer(context.WithoutCancel(ctx), id, time.Second)
		logs, _ := rn.Runtime.Logs(context.WithoutCancel(ctx), id, logLines)
		if errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			return 0, logs, fmt.Errorf("did not finish within %s and was stopped; last output:\n%s", deadline, indent(logs))
		}
		return 0, logs, err
	}
	logs, _ := rn.Runtime.Logs(context.WithoutCancel(ctx), id, 200)
	return code, logs, nil
}

// runHelper runs a helper container of the deployer for a service to its end and returns its
// output; a non-zero exit is an error with the helper's first line of output.
func (hp *helpers) runHelper(ctx context.Context, s *config.Service, name, image string, vols []VolumeMount, cmd ...string) (string, error) {
	code, logs, err := hp.helperRun(ctx, hp.helperSpec(s, name, image, vols, cmd...), snapshotDeadline)
	if err == nil && code != 0 {
		err = fmt.Errorf("the helper exited with code %d: %s", code, firstLine(strings.TrimSpace(logs)))
	}
	return logs, err
}

// putBackVolume makes a database's volume again from its safety copy.
func (hp *helpers) putBackVolume(ctx context.Context, s *config.Service, helper, safety, volume string) error {
	if _, err := hp.runHelper(ctx, s, "put-back", helper, []VolumeMount{{Name: safety, Target: "/safety"}, {Name: volume, Target: "/db"}}, "restore-volume", "/safety", "/db"); err != nil {
		return fmt.Errorf("put %s back from %s: %w", volume, safety, err)
	}
	return nil
}

// helperSpec is a helper container of the deployer for a service: no network, the volumes
// given, the deployer's labels so that one a kill leaves is removed by the next apply.
func (hp *helpers) helperSpec(s *config.Service, name, image string, vols []VolumeMount, cmd ...string) ContainerSpec {
	rn := hp.rn
	return ContainerSpec{Name: rn.Project.Name + "-" + s.Name + "-" + name, Image: image, Cmd: append([]string{"internal"}, cmd...),
		Volumes: vols, NoNetwork: true, Memory: rn.HelperMemory,
		Labels: map[string]string{plan.LabelProject: rn.Project.Name, plan.LabelService: s.Name, plan.LabelRole: plan.RoleOneOff}}
}

// schemaReport is what the helper's sqlite-schema says of one file.
type schemaReport struct {
	File       string          `json:"file"`
	QuickCheck string          `json:"quick_check"`
	Schema     *migrate.Schema `json:"schema"`
	Error      string          `json:"error"`
	Missing    bool            `json:"missing"`
}

// readSchema runs the helper's sqlite-schema on a database of a volume.
func (hp *helpers) readSchema(ctx context.Context, s *config.Service, helper, vol, path string) (*schemaReport, error) {
	logs, err := hp.runHelper(ctx, s, "schema", helper, []VolumeMount{{Name: vol, Target: "/db"}}, "sqlite-schema", "/db/"+path)
	if err != nil {
		return nil, fmt.Errorf("schema helper: %w", err)
	}
	rep := &schemaReport{}
	if err := json.Unmarshal([]byte(lastJSONLine(logs)), rep); err != nil {
		return nil, fmt.Errorf("schema helper: unreadable report (%v)", err)
	}
	return rep, nil
}

// lastJSONLine is the last line of a helper's output that is a JSON object.
func lastJSONLine(logs string) string { return lastLineStarting(logs, "{") }

// lastLineStarting is the last line of a helper's output that starts with prefix (a JSON
// array's "[").
func lastLineStarting(logs, prefix string) string {
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); strings.HasPrefix(l, prefix) {
			return l
		}
	}
	return ""
}

// oneOffContainer creates a helper container of the deployer, replacing one of the same name
// that an interrupted run left.
func (hp *helpers) oneOffContainer(ctx context.Context, spec ContainerSpec) (string, error) {
	rn := hp.rn
	id, err := rn.Runtime.CreateContainer(ctx, spec)
	if errors.Is(err, ErrNameTaken) {
		obs, oerr := plan.Observe(ctx, rn.Runtime, rn.Project)
		if oerr != nil {
			return "", oerr
		}
		for _, c := range obs.All {
			if c.Name == spec.Name && c.Role() == plan.RoleOneOff && c.Service() == spec.Labels[plan.LabelService] {
				rn.Runtime.RemoveContainer(ctx, c.ID)
				return rn.Runtime.CreateContainer(ctx, spec)
			}
		}
		return "", rn.own.nameTaken(ctx, spec.Name, fmt.Sprintf("a one-off container of service.%s", spec.Labels[plan.LabelService]))
	}
	return id, err
}
