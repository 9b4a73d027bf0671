package executor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/executor/engine"
)

// image builds, pulls or looks up the new release's image, and labels the release. When the
// image is the live one and nothing else changed, there is nothing to deploy.
func (d *deployment) image(ctx context.Context) error {
	rn, s, r, st := d.rn, d.s, d.r, d.st
	contextHash, err := d.resolveImage(ctx)
	if err != nil {
		return err
	}
	doc := SpecDoc(rn.Project, s, rn.hasher)
	r.labels = rn.labels(s, RoleCandidate, r.number, doc, r.imageID, contextHash, r.origin)
	if st.Live != nil && st.Live.Labels[LabelSpec] == r.labels[LabelSpec] && st.Live.Running() {
		// The build produced the image that runs already, and nothing else changed.
		rn.log(s.Name, "", "the new image is the live one (%s) and the spec is unchanged: nothing to deploy", short(r.imageID))
		d.so.Release, d.so.ImageID = st.Live.Release(), r.imageID
		return errNothingToDeploy
	}
	d.so.ImageID = r.imageID
	return nil
}

// resolveImage sets the release's image ID and origin, and returns the build context's hash
// ("" for a named image).
func (d *deployment) resolveImage(ctx context.Context) (string, error) {
	rn, s, r, ch := d.rn, d.s, d.r, d.ch
	if s.Build == nil || ch.ImageID != "" {
		if ch.ImageID != "" {
			r.origin = OriginFound
			if s.Build != nil {
				r.origin = OriginBuilt // the live image, built from the same context
			} else if o := originOf(d.st, ch.ImageID); o != "" {
				r.origin = o // pulled by an earlier deploy
			}
			return ch.ContextHash, rn.step(s.Name, StepImage, fmt.Sprintf("use %s (%s)", s.Image, short(ch.ImageID)), func() error {
				// By ID: the tag may have moved since the plan was made.
				id, err := rn.Runtime.ImageID(ctx, ch.ImageID)
				if errors.Is(err, ErrNotFound) {
					return fmt.Errorf("image %s (%s) is gone from the engine; run plan again", s.Image, short(ch.ImageID))
				}
				r.imageID = id
				return err
			})
		}
		r.origin = OriginPulled
		return "", rn.step(s.Name, StepImage, "pull "+s.Image, func() error {
			id, err := rn.Runtime.PullImage(ctx, s.Image, rn.registries(), nil)
			r.imageID = id
			return err
		})
	}
	r.origin = OriginBuilt
	hash := ""
	err := rn.step(s.Name, StepBuild, fmt.Sprintf("build %s", s.Image), func() error {
		var err error
		hash, err = d.build(ctx)
		return err
	})
	return hash, err
}

// build runs build.before, then builds the image from its context, unless the context is the
// live image's.
func (d *deployment) build(ctx context.Context) (string, error) {
	rn, s, r, st := d.rn, d.s, d.r, d.st
	dir := filepath.Join(rn.Project.Dir, s.Build.Context)
	if len(s.Build.Before) > 0 {
		if err := d.runBefore(ctx); err != nil {
			return "", err
		}
	}
	hash, err := engine.ContextHash(dir, s.Build.Dockerfile)
	if err != nil {
		return "", err
	}
	if st.Live != nil && st.Live.Labels[LabelContextHash] == hash {
		if _, err := rn.Runtime.ImageID(ctx, st.Live.ImageID); err == nil {
			r.imageID = st.Live.ImageID
			return hash, skipped(fmt.Sprintf("build context unchanged (%s): using the live image %s", short(hash), short(r.imageID)))
		}
	}
	id, err := rn.Runtime.BuildImage(ctx, BuildOptions{
		Dir: dir, Dockerfile: s.Build.Dockerfile, Tag: s.Image, Args: s.Build.Args,
		Labels: map[string]string{LabelProject: rn.Project.Name, LabelService: s.Name, LabelContextHash: hash},
	}) // the builder's output is quiet; its last lines come with a failure
	r.imageID = id
	return hash, err
}

// runBefore runs build.before in the project directory, its output as log events.
func (d *deployment) runBefore(ctx context.Context) error {
	rn, s := d.rn, d.s
	cmd := exec.CommandContext(ctx, s.Build.Before[0], s.Build.Before[1:]...)
	cmd.Dir = rn.Project.Dir
	w := &lineWriter{emit: func(l string) { rn.log(s.Name, StepBuild, "%s", l) }}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build.before `%s` in %s: %v (last output: %s)", rn.red.words(s.Build.Before), rn.Project.Dir, err, w.tail())
	}
	return nil
}

// lineWriter turns written bytes into one event per line.
type lineWriter struct {
	emit func(string)
	buf  []byte
	last []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := strings.IndexByte(string(w.buf), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.buf[:i]), "\r")
		w.buf = w.buf[i+1:]
		if strings.TrimSpace(line) == "" {
			continue
		}
		w.emit(line)
		w.last = append(w.last, line)
		if len(w.last) > 5 {
			w.last = w.last[1:]
		}
	}
	return len(p), nil
}

func (w *lineWriter) tail() string {
	if len(w.buf) > 0 {
		w.last = append(w.last, string(w.buf))
	}
	if len(w.last) == 0 {
		return "(none)"
	}
	return strings.Join(w.last, " | ")
}
