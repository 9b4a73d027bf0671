package docker

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/deployer-dev/deployer/executor/engine"
)

// CopyFrom streams a tar of path inside the container; the engine reads the files, so no helper
// image or tool in the app's image is needed. It works on a paused or stopped container.
func (e *Engine) CopyFrom(ctx context.Context, id, path string) (io.ReadCloser, error) {
	rc, _, err := e.cli.CopyFromContainer(ctx, id, path)
	if err != nil {
		if isNotFound(err) {
			return nil, fmt.Errorf("%s in container %s: %w", path, short(id), engine.ErrNotFound)
		}
		return nil, fmt.Errorf("copy %s out of %s: %w", path, short(id), err)
	}
	return rc, nil
}

// CopyTo extracts a tar stream into dir inside the container (running or stopped).
func (e *Engine) CopyTo(ctx context.Context, id, dir string, tar io.Reader) error {
	if err := e.cli.CopyToContainer(ctx, id, dir, tar, container.CopyToContainerOptions{}); err != nil {
		return fmt.Errorf("copy into %s:%s: %w", short(id), dir, err)
	}
	return nil
}

// Pause freezes every process of the container.
//
// The kernel's freezer gives up when a process stays in uninterruptible I/O (a busy writer on a
// slow disk): "unable to freeze". The container is left running then, so trying again is safe.
func (e *Engine) Pause(ctx context.Context, id string) error {
	var err error
	for try := 0; try < 4; try++ {
		if err = e.cli.ContainerPause(ctx, id); err == nil || !strings.Contains(err.Error(), "unable to freeze") {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pause %s: %w", short(id), ctx.Err())
		case <-time.After(time.Duration(try+1) * 200 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("pause %s: %w", short(id), err)
	}
	return nil
}

// Unpause lets a paused container run again.
func (e *Engine) Unpause(ctx context.Context, id string) error {
	if err := e.cli.ContainerUnpause(ctx, id); err != nil {
		return fmt.Errorf("unpause %s: %w", short(id), err)
	}
	return nil
}

// LogStream streams the container's whole output, stdout and stderr interleaved as text.
func (e *Engine) LogStream(ctx context.Context, id string) (io.ReadCloser, error) {
	rc, err := e.cli.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true})
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", short(id), err)
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		rc.Close()
		pw.CloseWithError(err)
	}()
	return pr, nil
}
