package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/deployer-dev/deployer/executor/selfimage"
)

// The proxy and restores run the deployer itself in a container built FROM scratch. A deployer
// built the usual way (`go install`, `go build`: cgo on) is dynamically linked; its image then
// carries what the binary needs to run, found from the binary itself: its ELF interpreter and
// the shared libraries it names, and theirs, at the paths it looks for them.

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
