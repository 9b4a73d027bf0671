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

// Labels the deployer writes on everything it creates (package engine documents each).
const (
	LabelProject     = engine.LabelProject
	LabelService     = engine.LabelService
	LabelRole        = engine.LabelRole
	LabelRelease     = engine.LabelRelease
	LabelSpec        = engine.LabelSpec
	LabelSpecDoc     = engine.LabelSpecDoc
	LabelContextHash = engine.LabelContextHash
	LabelCreatedAt   = engine.LabelCreatedAt
	LabelSource      = engine.LabelSource
	LabelHolder      = engine.LabelHolder
	LabelImage       = engine.LabelImage
	LabelLiveName    = engine.LabelLiveName
	LabelEngines     = engine.LabelEngines
	LabelAddress     = engine.LabelAddress
	LabelImageOrigin = engine.LabelImageOrigin
	LabelKey         = engine.LabelKey
	// Labels of built images, and of a release that takes a container over (package engine).
	LabelImageProject = engine.LabelImageProject
	LabelImageService = engine.LabelImageService
	LabelTakeoverOf   = engine.LabelTakeoverOf
	// MaxRelease bounds release numbers (ParseRelease).
	MaxRelease = engine.MaxRelease
)

// ParseRelease reads a release label strictly (package engine).
func ParseRelease(s string) (int, bool) { return engine.ParseRelease(s) }
