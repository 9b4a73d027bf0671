package docker

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"

	"github.com/deployer-dev/deployer/executor/engine"
)

// BuildImage builds an image with the engine's classic builder, streaming the context (what
// .dockerignore leaves) as a tar without holding it in memory, and returns the image ID. No
// registry is involved unless the Dockerfile pulls a base image.
func (e *Engine) BuildImage(ctx context.Context, o engine.BuildOptions) (string, error) {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeContext(pw, o.Dir, o.Dockerfile))
	}()
	defer pr.Close()
	args := map[string]*string{}
	for k, v := range o.Args {
		args[k] = &v
	}
	resp, err := e.cli.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Tags:        []string{o.Tag},
		Dockerfile:  o.Dockerfile,
		BuildArgs:   args,
		Labels:      o.Labels,
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
	})
	if err != nil {
		return "", fmt.Errorf("build %s: %w", o.Tag, err)
	}
	defer resp.Body.Close()
	if err := readJSONMessages(resp.Body, o.Log); err != nil {
		return "", fmt.Errorf("build %s: %w", o.Tag, err)
	}
	return e.ImageID(ctx, o.Tag)
}

func writeContext(w io.Writer, dir, dockerfile string) error {
	tw := tar.NewWriter(w)
	err := engine.WalkContext(dir, dockerfile, func(f engine.ContextFile) error {
		hdr, err := tar.FileInfoHeader(f.Info, f.Link)
		if err != nil {
			return err
		}
		hdr.Name = f.Rel
		if f.Info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !f.Info.Mode().IsRegular() {
			return nil
		}
		file, err := os.Open(f.Path)
		if err != nil {
			return err
		}
		defer file.Close()
		_, err = io.Copy(tw, file)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// jsonMessage is one line of the engine's progress stream (build, pull, load).
type jsonMessage struct {
	Stream      string `json:"stream"`
	Status      string `json:"status"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

// readJSONMessages drains a progress stream, copying its text to log, and returns the first error
// it reports, with the last lines of output before it.
func readJSONMessages(r io.Reader, log io.Writer) error {
	var tail []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var m jsonMessage
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			continue
		}
		if m.Error != "" || m.ErrorDetail != nil {
			msg := m.Error
			if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
				msg = m.ErrorDetail.Message
			}
			if len(tail) > 0 {
				msg += " (after: " + strings.Join(tail, " | ") + ")"
			}
			return errors.New(strings.TrimSpace(msg))
		}
		text := m.Stream
		if text == "" {
			text = m.Status
		}
		if strings.TrimSpace(text) == "" {
			continue
		}
		if log != nil {
			io.WriteString(log, strings.TrimRight(text, "\n")+"\n")
		}
		tail = append(tail, strings.TrimSpace(text))
		if len(tail) > 3 {
			tail = tail[1:]
		}
	}
	return sc.Err()
}

// PullImage pulls an image from its registry, with the credentials a registry block gives for
// it, else those `docker pull` would use on this machine.
func (e *Engine) PullImage(ctx context.Context, ref string, registries map[string]engine.RegistryAuth, log io.Writer) (string, error) {
	auth, from, err := credentials(ref, registries)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	rc, err := e.cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: encodeAuth(auth)})
	if err != nil {
		return "", refusedPull(ref, from, fmt.Errorf("pull %s: %w", ref, err))
	}
	defer rc.Close()
	if err := readJSONMessages(rc, log); err != nil {
		return "", refusedPull(ref, from, fmt.Errorf("pull %s: %w", ref, err))
	}
	return e.ImageID(ctx, ref)
}

// LoadImage imports images from a tar stream (docker save format), for engines without a registry.
func (e *Engine) LoadImage(ctx context.Context, r io.Reader) error {
	resp, err := e.cli.ImageLoad(ctx, r)
	if err != nil {
		return fmt.Errorf("load image: %w", err)
	}
	defer resp.Body.Close()
	return readJSONMessages(resp.Body, nil)
}

// RemoveImage removes an image; one still used by a container stays, which is not an error.
func (e *Engine) RemoveImage(ctx context.Context, id string) error {
	_, err := e.cli.ImageRemove(ctx, id, image.RemoveOptions{PruneChildren: true})
	if err != nil && !isNotFound(err) && !isConflict(err) {
		return fmt.Errorf("remove image %s: %w", id, err)
	}
	return nil
}

// SaveImage streams the image archive of ref (docker save).
func (e *Engine) SaveImage(ctx context.Context, ref string) (io.ReadCloser, error) {
	rc, err := e.cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, fmt.Errorf("save image %s: %w", ref, err)
	}
	return rc, nil
}

// LockImage is the image lock containers are created from: no layers, never started.
const LockImage = "deployer-lock:1"

// lockImageCmd is what the lock image would run (it never runs): a path in no image.
var lockImageCmd = []string{"/deployer-lock"}

// EnsureLockImage builds the lock image when the engine lacks it. It has no layers, so it costs
// nothing and needs no registry. Its tag can be moved by anyone: an image of that tag is used
// only when it is the one the deployer builds (no layers, no volume, only its label and
// command); otherwise the tag is built again (a volume in it would leak an anonymous volume
// per lock, its labels would be every lock's).
func (e *Engine) EnsureLockImage(ctx context.Context) (string, error) {
	if c, err := e.ImageContent(ctx, LockImage); err == nil && isLockImage(c) {
		return c.ID, nil
	}
	id, err := e.buildLockImage(ctx)
	if err != nil {
		return "", err
	}
	if c, err := e.ImageContent(ctx, id); err != nil || !isLockImage(c) {
		return "", fmt.Errorf("the lock image %s built by the deployer is not what it built (moved meanwhile?): run again", LockImage)
	}
	return id, nil
}

// isLockImage reports whether an image is exactly the lock image the deployer builds.
func isLockImage(c *engine.ImageContent) bool {
	return len(c.Layers) == 0 && len(c.Entrypoint) == 0 && slices.Equal(c.Cmd, lockImageCmd) && len(c.Volumes) == 0 &&
		c.User == "" && c.WorkingDir == "" && !c.Other && len(c.Labels) == 1 && c.Labels[engine.LabelImage] == "lock" && onlyPath(c.Env)
}

// onlyPath reports whether an image's environment is at most the PATH a builder sets.
func onlyPath(env []string) bool {
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PATH=") {
			return false
		}
	}
	return true
}

func (e *Engine) buildLockImage(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "deployer-lock")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	df := "FROM scratch\nLABEL deployer.image=lock\nCMD [\"" + lockImageCmd[0] + "\"]\n"
	if err := os.WriteFile(dir+"/Dockerfile", []byte(df), 0o644); err != nil {
		return "", err
	}
	return e.BuildImage(ctx, engine.BuildOptions{Dir: dir, Dockerfile: "Dockerfile", Tag: LockImage})
}
