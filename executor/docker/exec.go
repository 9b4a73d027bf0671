package docker

import (
	"bytes"
	"context"
	"fmt"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
)

// EnsureNetwork creates a bridge network unless one of that name exists.
func (e *Engine) EnsureNetwork(ctx context.Context, name string, labels map[string]string) error {
	if _, err := e.cli.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
		return nil
	}
	_, err := e.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: labels})
	if err != nil && !isConflict(err) {
		return fmt.Errorf("create network %s: %w", name, err)
	}
	return nil
}

// Exec runs a command in a running container and returns its output and exit code.
func (e *Engine) Exec(ctx context.Context, id string, cmd []string) (string, int, error) {
	created, err := e.cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return "", -1, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	att, err := e.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", -1, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, att.Reader); err != nil {
		return "", -1, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	ins, err := e.cli.ContainerExecInspect(ctx, created.ID)
	if err != nil {
		return "", -1, fmt.Errorf("exec in %s: %w", short(id), err)
	}
	if ins.ExitCode != 0 && errOut.Len() > 0 {
		return out.String() + errOut.String(), ins.ExitCode, nil
	}
	return out.String(), ins.ExitCode, nil
}

// SetRestart changes a container's restart policy.
func (e *Engine) SetRestart(ctx context.Context, id, policy string) error {
	_, err := e.cli.ContainerUpdate(ctx, id, container.UpdateConfig{RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyMode(policy)}})
	if err != nil {
		return fmt.Errorf("restart policy of %s: %w", short(id), err)
	}
	return nil
}

// Platform is the engine's OS and architecture, as Go names them ("linux", "amd64").
func (e *Engine) Platform(ctx context.Context) (string, string, error) {
	v, err := e.cli.ServerVersion(ctx)
	if err != nil {
		return "", "", fmt.Errorf("docker engine %s: %w", e.host, err)
	}
	return v.Os, v.Arch, nil
}
