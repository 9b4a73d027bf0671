package docker

import (
	"testing"

	"github.com/deployer-dev/deployer/executor/engine"
)

// An image under the lock image's tag is used only when it is exactly the one the deployer
// builds: anyone can move the tag to an image whose labels every lock would inherit, or whose
// volume would leave an anonymous volume behind each lock.
func TestLockImageByContent(t *testing.T) {
	lock := func(mod func(c *engine.ImageContent)) *engine.ImageContent {
		c := &engine.ImageContent{Cmd: []string{"/deployer-lock"}, Labels: map[string]string{"deployer.image": "lock"}}
		if mod != nil {
			mod(c)
		}
		return c
	}
	for name, c := range map[string]*engine.ImageContent{
		"a layer":         lock(func(c *engine.ImageContent) { c.Layers = []string{"sha256:00"} }),
		"a volume":        lock(func(c *engine.ImageContent) { c.Volumes = []string{"/x"} }),
		"another command": lock(func(c *engine.ImageContent) { c.Cmd = []string{"/bin/sh"} }),
		"an entrypoint":   lock(func(c *engine.ImageContent) { c.Entrypoint = []string{"/bin/sh"} }),
		"a label more":    lock(func(c *engine.ImageContent) { c.Labels[engine.LabelService] = "web" }),
		"a project label": lock(func(c *engine.ImageContent) {
			c.Labels = map[string]string{engine.LabelProject: "x", "deployer.image": "lock"}
		}),
		"no label":       lock(func(c *engine.ImageContent) { c.Labels = nil }),
		"an environment": lock(func(c *engine.ImageContent) { c.Env = []string{"LD_PRELOAD=/x"} }),
		"a user":         lock(func(c *engine.ImageContent) { c.User = "1000" }),
		"a health check": lock(func(c *engine.ImageContent) { c.Other = true }),
		"a working dir":  lock(func(c *engine.ImageContent) { c.WorkingDir = "/x" }),
	} {
		if isLockImage(c) {
			t.Errorf("an image with %s is taken for the lock image", name)
		}
	}
	if !isLockImage(lock(nil)) || !isLockImage(lock(func(c *engine.ImageContent) { c.Env = []string{"PATH=/bin"} })) {
		t.Error("the lock image itself is refused")
	}
}
