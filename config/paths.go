package config

import "strconv"

// Attribute paths name a service's attributes: in plans (what differs), in the spec recorded
// on releases, and as the keys of source ranges and of sensitivity. They are written here once;
// hclspec, the checks below and the executor use these.
const (
	AttrContainerName = "container_name"
	AttrImage         = "image"
	AttrCommand       = "command"
	AttrEnv           = "env" // the map as written; each value is EnvAttr(key)
	AttrInit          = "init"

	AttrBuild           = "build"
	AttrBuildContext    = "build.context"
	AttrBuildDockerfile = "build.dockerfile"
	AttrBuildArgs       = "build.args" // the map as written; each value is BuildArgAttr(key)
	AttrBuildBefore     = "build.before"

	AttrHealth         = "health_check"
	AttrHealthPath     = "health_check.path"
	AttrHealthStatus   = "health_check.status"
	AttrHealthInterval = "health_check.interval"
	AttrHealthTimeout  = "health_check.timeout"
	AttrHealthHealthy  = "health_check.healthy"
	AttrHealthDeadline = "health_check.deadline"

	AttrBackup            = "backup"
	AttrBackupStore       = "backup.store"
	AttrBackupVolumes     = "backup.volumes"
	AttrBackupConsistency = "backup.consistency"
	AttrBackupKeep        = "backup.keep"
	AttrBackupLogs        = "backup.logs"

	AttrDeployCutover      = "deploy.cutover"
	AttrDeployDrain        = "deploy.drain"
	AttrDeployStopTimeout  = "deploy.stop_timeout"
	AttrDeployAutoRollback = "deploy.auto_rollback"
	AttrDeployKeep         = "deploy.keep_releases"

	AttrResources       = "resources"
	AttrResourcesMemory = "resources.memory"
	AttrResourcesCPUs   = "resources.cpus"

	AttrMigration                 = "migration"
	AttrMigrationCommand          = "migration.command"
	AttrMigrationSQLite           = "migration.sqlite"
	AttrMigrationDeadline         = "migration.deadline"
	AttrMigrationDryRun           = "migration.dry_run"
	AttrMigrationAllowDestructive = "migration.allow_destructive"
	AttrMigrationHoldTimeout      = "migration.hold_timeout"

	AttrSmoke             = "smoke"
	AttrSmokeRequests     = "smoke.requests"
	AttrSmokeDuration     = "smoke.duration"
	AttrSmokeConcurrency  = "smoke.concurrency"
	AttrSmokePaths        = "smoke.paths"
	AttrSmokeMaxErrorRate = "smoke.max_error_rate"
	AttrSmokeP95          = "smoke.p95"

	// The engines and the rollout say where and how a release runs, not what it is: they are
	// not part of Attributes (a service moved to one more engine is not a new release).
	AttrEngines      = "engines"
	AttrRollout      = "rollout"
	AttrRolloutBatch = "rollout.batch"
	AttrRolloutWait  = "rollout.wait"

	AttrLog         = "log"
	AttrLogMaxSize  = "log.max_size"
	AttrLogMaxFiles = "log.max_files"
)

// Attributes of the labelled blocks.
const (
	PortContainer = "container"
	PortHost      = "host"
	PortCandidate = "candidate"
	PortProtocol  = "protocol"

	VolumeTarget = "target"
	VolumeShared = "shared"

	CanaryPath         = "path"
	CanaryStatus       = "status"
	CanaryBodyContains = "body_contains"

	SQLiteVolume      = "volume"
	SQLitePath        = "path"
	SQLiteQuickCheck  = "quick_check"
	SQLiteSeedIfEmpty = "seed_if_empty"

	HookCommand = "command"

	BackupVolumeConsistency = "consistency"
)

// ElemAttr is the path of element i of a list attribute (a command's word).
func ElemAttr(attr string, i int) string { return attr + "[" + strconv.Itoa(i) + "]" }

// EnvAttr is the path of one environment variable.
func EnvAttr(key string) string { return AttrEnv + "." + key }

// BuildArgAttr is the path of one build argument.
func BuildArgAttr(key string) string { return AttrBuildArgs + "." + key }

// PortAttr is the path of an attribute of the port block of a container port ("" for the
// block itself). Ports are keyed by their container port, so reordering blocks changes nothing.
func PortAttr(container int, attr string) string {
	return labelled("port", strconv.Itoa(container), attr)
}

// VolumeAttr is the path of an attribute of a volume block ("" for the block).
func VolumeAttr(name, attr string) string { return labelled("volume", name, attr) }

// CanaryAttr is the path of an attribute of a canary block ("" for the block).
func CanaryAttr(name, attr string) string { return labelled("canary", name, attr) }

// SQLiteAttr is the path of an attribute of an sqlite block ("" for the block).
func SQLiteAttr(name, attr string) string { return labelled("sqlite", name, attr) }

// BackupVolumeAttr is the path of an attribute of a volume block inside backup ("" for the
// block).
func BackupVolumeAttr(name, attr string) string { return labelled(AttrBackup+".volume", name, attr) }

// HookAttr is the path of an attribute of a hook block ("" for the block).
func HookAttr(when, attr string) string { return labelled("hook", when, attr) }

func labelled(block, label, attr string) string {
	if attr == "" {
		return block + "." + label
	}
	return block + "." + label + "." + attr
}
