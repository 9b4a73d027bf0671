package executor

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/deployer-dev/deployer/config"
	"github.com/deployer-dev/deployer/executor/backup"
	"github.com/deployer-dev/deployer/executor/engine"
	"github.com/deployer-dev/deployer/executor/plan"
)

// image builds, pulls or looks up the new release's image, and labels the release. When the
// image is the live one and nothing else changed, there is nothing to deploy.
func (d *deployment) image(ctx context.Context) error {
	rn, s, r, st := d.rn, d.s, d.r, d.st
	var contextHash string
	var err error
	if from := d.gate.receivesFrom(); from != "" {
		contextHash, err = d.receiveImage(ctx, from)
	} else {
		contextHash, err = d.resolveImage(ctx)
		d.gate.publishImage(r.imageID, contextHash, err)
	}
	if err != nil {
		return err
	}
	doc := plan.SpecDoc(rn.Project, s, rn.hasher)
	r.labels = rn.labels(s, plan.RoleCandidate, r.number, doc, r.imageID, contextHash, r.origin)
	if t := d.ch.Takeover; d.adopting && t != nil {
		// Should the cutover be interrupted once it set the container aside, the next apply
		// knows it by this (and no other container of that name is taken over).
		r.labels[plan.LabelTakeoverOf] = t.ID
	}
	if st.Live != nil && st.Live.Labels[plan.LabelSpec] == r.labels[plan.LabelSpec] && st.Live.Running() {
		// The build produced the image that runs already, and nothing else changed.
		rn.log(s.Name, "", "the new image is the live one (%s) and the spec is unchanged: nothing to deploy", plan.Short(r.imageID))
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
			r.origin = plan.OriginFound
			if s.Build != nil {
				r.origin = plan.OriginBuilt // the live image, built from the same context
			} else if o := plan.OriginOf(d.st, ch.ImageID); o != "" {
				r.origin = o // pulled by an earlier deploy
			}
			return ch.ContextHash, rn.step(s.Name, plan.StepImage, "", "", func() error {
				// By ID: the tag may have moved since the plan was made.
				id, err := rn.Runtime.ImageID(ctx, ch.ImageID)
				if errors.Is(err, ErrNotFound) {
					return fmt.Errorf("image %s (%s) is gone from the engine; run plan again", s.Image, plan.Short(ch.ImageID))
				}
				r.imageID = id
				return err
			})
		}
		r.origin = plan.OriginPulled
		return "", rn.step(s.Name, plan.StepImage, "", "", func() error {
			id, err := rn.Runtime.PullImage(ctx, s.Image, rn.registries(), nil)
			r.imageID = id
			return err
		})
	}
	r.origin = plan.OriginBuilt
	hash := ""
	err := rn.step(s.Name, plan.StepBuild, "", "", func() error {
		var err error
		hash, err = d.build(ctx)
		return err
	})
	return hash, err
}

// receiveImage takes the image another engine of the rollout built or holds: the same image
// on every engine, built once, sent through the engines' APIs (no registry) to an engine that
// lacks it.
func (d *deployment) receiveImage(ctx context.Context, from string) (string, error) {
	rn, s, r := d.rn, d.s, d.r
	name := plan.StepImage
	r.origin = plan.OriginPulled // put here by the deployer: a clean-up may remove it
	if s.Build != nil {
		name, r.origin = plan.StepBuild, plan.OriginBuilt
	}
	hash := ""
	err := rn.step(s.Name, name, "", "", func() error {
		img, err := d.gate.awaitImage(ctx)
		if err != nil {
			return err
		}
		if img.err != nil {
			return fmt.Errorf("engine %s has no image to send: %v", from, firstLine(img.err.Error()))
		}
		r.imageID, hash = img.id, img.contextHash
		if _, err := rn.Runtime.ImageID(ctx, img.id); err == nil {
			return skipped(fmt.Sprintf("this engine has %s (%s) already", s.Image, plan.Short(img.id)))
		}
		return rn.sendImage(ctx, s.Name, from, s.Image, img.id)
	})
	return hash, err
}

// sendImage streams an image from another engine of the fleet into this one.
func (rn *run) sendImage(ctx context.Context, service, from, ref, id string) error {
	src := rn.peers[from]
	if src == nil {
		return fmt.Errorf("engine %s is not connected", from)
	}
	start := time.Now()
	rc, err := src.SaveImage(ctx, ref)
	if err != nil {
		return fmt.Errorf("from engine %s: %w", from, err)
	}
	defer rc.Close()
	cr := &backup.CountingReader{R: rc}
	if err := rn.Runtime.LoadImage(ctx, cr); err != nil {
		return fmt.Errorf("send %s from engine %s: %w", ref, from, err)
	}
	got, err := rn.Runtime.ImageID(ctx, ref)
	if err != nil {
		return fmt.Errorf("send %s from engine %s: %w", ref, from, err)
	}
	if got != id {
		return fmt.Errorf("engine %s sent %s as %s, not %s (was it built again meanwhile?); run apply again", from, ref, plan.Short(got), plan.Short(id))
	}
	secs := time.Since(start).Seconds()
	rn.log(service, plan.StepImage, "%s (%s) sent from engine %s: %s in %.2fs (%s/s)", ref, plan.Short(id), from, HumanBytes(cr.N), secs, HumanBytes(int64(float64(cr.N)/max(secs, 0.001))))
	return nil
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
	content, err := engine.ContextHash(dir, s.Build.Dockerfile)
	if err != nil {
		return "", err
	}
	hash := plan.BuildHash(rn.Project, s, content, rn.hasher)
	if st.Live != nil && st.Live.Labels[plan.LabelContextHash] == hash {
		if _, err := rn.Runtime.ImageID(ctx, st.Live.ImageID); err == nil {
			r.imageID = st.Live.ImageID
			return hash, skipped(fmt.Sprintf("build context and inputs unchanged (%s): using the live image %s", plan.Short(hash), plan.Short(r.imageID)))
		}
	}
	id, err := rn.Runtime.BuildImage(ctx, BuildOptions{
		Dir: dir, Dockerfile: s.Build.Dockerfile, Tag: s.Image, Args: s.Build.Args,
		// Not deployer.project and deployer.service: every container run from the image would
		// carry them, and an operator's `docker run` of it is no release.
		Labels: map[string]string{plan.LabelImageProject: rn.Project.Name, plan.LabelImageService: s.Name, plan.LabelContextHash: hash},
	}) // the builder's output is quiet; its last lines come with a failure
	r.imageID = id
	return hash, err
}

// runBefore runs build.before in the project directory, its output as log events.
func (d *deployment) runBefore(ctx context.Context) error {
	rn, s := d.rn, d.s
	cmd := exec.CommandContext(ctx, s.Build.Before[0], s.Build.Before[1:]...)
	cmd.Dir = rn.Project.Dir
	w := &lineWriter{emit: func(l string) { rn.log(s.Name, plan.StepBuild, "%s", rn.red.Output(l)) }}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build.before `%s` in %s: %v (last output: %s)", rn.red.Command(s.Name, config.AttrBuildBefore, s.Build.Before), rn.Project.Dir, err, rn.red.Output(w.tail()))
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
