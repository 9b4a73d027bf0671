package plan

import "github.com/deployer-dev/deployer/executor/engine"

// Every label and role the deployer writes on engine objects. What runs is read back from them:
// there is no state file. The labels an engine filters by (the project's, the key's) are
// defined by package engine, which every engine implements against; the rest are the plan's.

// Labels on everything the deployer creates (package engine documents each).
const (
	LabelProject      = engine.LabelProject
	LabelService      = engine.LabelService
	LabelRole         = engine.LabelRole
	LabelRelease      = engine.LabelRelease
	LabelSpec         = engine.LabelSpec
	LabelSpecDoc      = engine.LabelSpecDoc
	LabelContextHash  = engine.LabelContextHash
	LabelCreatedAt    = engine.LabelCreatedAt
	LabelSource       = engine.LabelSource
	LabelHolder       = engine.LabelHolder
	LabelImage        = engine.LabelImage
	LabelLiveName     = engine.LabelLiveName
	LabelAddress      = engine.LabelAddress
	LabelImageOrigin  = engine.LabelImageOrigin
	LabelEngines      = engine.LabelEngines
	LabelKey          = engine.LabelKey
	LabelImageProject = engine.LabelImageProject
	LabelImageService = engine.LabelImageService
	LabelTakeoverOf   = engine.LabelTakeoverOf
	LabelFixedRange   = engine.LabelFixedRange
)

// Roles of containers.
const (
	RoleLive      = "live"
	RoleCandidate = "candidate"
	RolePrevious  = "previous"
	RoleProxy     = "proxy"
	RoleLock      = "lock"
	RoleOneOff    = "oneoff" // hooks and seeds: never serve
	// RoleMigrated marks that a migration ran on the live data (a container never started):
	// after a kill, the next apply does not run it again.
	RoleMigrated = "migrated"
)

// RoleScratch labels a volume the deployer made for a backup's snapshots.
const RoleScratch = "scratch"

// RoleData labels a service's volume the deployer created; LabelShared on it says the project
// that made it lets other projects mount it (its volume block says shared = true).
const (
	RoleData    = "data"
	LabelShared = "deployer.shared"
)

// RoleSafety labels the safety copy of a held migration's database volume; LabelVolume on it
// names the volume it is a copy of.
const (
	RoleSafety  = "safety"
	LabelVolume = "deployer.volume"
)

// LabelTakenOver marks a release that was a container the deployer took over, with how it had
// been made.
const LabelTakenOver = "deployer.taken-over"

// Labels of the lock container: who holds it, precisely enough to tell later whether that
// process is provably gone.
const (
	LabelLockHost  = "deployer.lock-host"
	LabelLockPID   = "deployer.lock-pid"
	LabelLockBoot  = "deployer.lock-boot"  // the kernel's boot ID when the lock was taken
	LabelLockPIDNS = "deployer.lock-pidns" // the PID namespace the PID is in
	LabelLockStart = "deployer.lock-start" // the process's start time, in clock ticks since boot
)

// LabelMigration is the label a release made after a migration keeps its report in, for
// `deployer releases` (bounded: labels are not a store).
const LabelMigration = "deployer.migration"

// LabelMigrationKey is on a migration's mark: which migration ran.
const LabelMigrationKey = "deployer.migration-key"
