package executor

import "github.com/deployer-dev/deployer/executor/engine"

// The engine port's values and calls (package engine), under the names the executor and its
// callers have always used.
type (
	Engine         = engine.Engine
	Runtime        = engine.Runtime
	Container      = engine.Container
	Published      = engine.Published
	ContainerSpec  = engine.ContainerSpec
	ContainerState = engine.ContainerState
	PortBinding    = engine.PortBinding
	VolumeMount    = engine.VolumeMount
	Volume         = engine.Volume
	BuildOptions   = engine.BuildOptions
	RegistryAuth   = engine.RegistryAuth
	ImageContent   = engine.ImageContent
)

// Errors of the engine port.
var (
	ErrNotFound  = engine.ErrNotFound
	ErrNameTaken = engine.ErrNameTaken
)
