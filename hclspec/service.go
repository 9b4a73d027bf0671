package hclspec

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/deployer-dev/deployer/config"
)

// The service block and the blocks inside it: each block's schema beside the function that
// decodes it. Attribute values are recorded under config's attribute paths, with their source
// range and, when they derive from a sensitive value, as sensitive.

var serviceSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "container_name"}, {Name: "image"}, {Name: "command"}, {Name: "env"}, {Name: "init"}, {Name: "engines"}},
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "build"}, {Type: "port"}, {Type: "volume", LabelNames: []string{"name"}}, {Type: "health_check"},
		{Type: "canary", LabelNames: []string{"name"}}, {Type: "sqlite", LabelNames: []string{"name"}}, {Type: "backup"},
		{Type: "hook", LabelNames: []string{"when"}}, {Type: "deploy"}, {Type: "resources"}, {Type: "log"},
		{Type: "migration"}, {Type: "smoke"}, {Type: "rollout"},
	},
}

// blockDecoders decode the blocks a service holds, by type.
var blockDecoders = map[string]func(d *decoder, s *config.Service, b *hcl.Block){
	"build": decodeBuild, "port": decodePort, "volume": decodeVolume, "health_check": decodeHealth,
	"canary": decodeCanary, "sqlite": decodeSQLite, "backup": decodeBackup, "hook": decodeHook,
	"deploy": decodeDeploy, "resources": decodeResources, "log": decodeLog,
	"migration": decodeMigration, "smoke": decodeSmoke, "rollout": decodeRollout,
}

func (d *decoder) service(b *hcl.Block) *config.Service {
	s := config.NewService(b.Labels[0])
	s.DeclRange = cfgRange(b.DefRange)
	d.prefix, d.ranges = "service."+s.Name+".", s.Ranges
	c := d.content(b.Body, serviceSchema)
	a := c.Attributes
	d.str(a, "container_name", config.AttrContainerName, &s.ContainerName)
	d.str(a, "image", config.AttrImage, &s.Image)
	d.command(a, "command", config.AttrCommand, &s.Command)
	d.strMap(a, "env", config.AttrEnv, &s.Env)
	d.boolean(a, "init", config.AttrInit, &s.Init)
	d.strList(a, "engines", config.AttrEngines, &s.Engines)
	single, diags := singleBlocks(c.Blocks, "build", "health_check", "backup", "deploy", "resources", "log", "migration", "smoke", "rollout")
	d.diags = append(d.diags, diags...)
	seen := map[string]bool{}
	for _, blk := range c.Blocks {
		if first, ok := single[blk.Type]; ok && first != blk {
			continue // a second one, reported by singleBlocks
		}
		if len(blk.Labels) == 1 {
			k := blk.Type + "." + blk.Labels[0]
			if seen[k] {
				d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate " + blk.Type,
					Detail:  fmt.Sprintf("%s %q is declared twice in service %q; give each its own name.", blk.Type, blk.Labels[0], s.Name),
					Subject: blk.DefRange.Ptr()})
				continue
			}
			seen[k] = true
		}
		blockDecoders[blk.Type](d, s, blk)
	}
	return s
}

var buildSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "context"}, {Name: "dockerfile"}, {Name: "args"}, {Name: "before"}},
}

func decodeBuild(d *decoder, s *config.Service, b *hcl.Block) {
	s.Build = config.NewBuild()
	a := d.content(b.Body, buildSchema).Attributes
	d.str(a, "context", config.AttrBuildContext, &s.Build.Context)
	d.str(a, "dockerfile", config.AttrBuildDockerfile, &s.Build.Dockerfile)
	d.strMap(a, "args", config.AttrBuildArgs, &s.Build.Args)
	d.command(a, "before", config.AttrBuildBefore, &s.Build.Before)
}

var portSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "container", Required: true}, {Name: "host", Required: true}, {Name: "candidate"}, {Name: "protocol"}},
}

// decodePort decodes a port block, whose attributes are keyed by its container port (reordering
// blocks changes nothing); a container port published twice is an error.
func decodePort(d *decoder, s *config.Service, b *hcl.Block) {
	port := config.NewPort()
	a := d.content(b.Body, portSchema).Attributes
	const pending = "port.container" // the container port's range, before its key is known
	d.integer(a, "container", pending, &port.Container)
	key := func(attr string) string { return config.PortAttr(port.Container, attr) }
	if r, ok := s.Ranges[pending]; ok {
		delete(s.Ranges, pending)
		if _, dup := s.Ranges[key(config.PortContainer)]; dup {
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate port",
				Detail:  fmt.Sprintf("Container port %d is published twice in service %q; publish each container port once.", port.Container, s.Name),
				Subject: hclRange(r).Ptr()})
		}
		s.Ranges[key(config.PortContainer)] = r
	}
	d.integer(a, "host", key(config.PortHost), &port.Host)
	d.integer(a, "candidate", key(config.PortCandidate), &port.Candidate)
	d.str(a, "protocol", key(config.PortProtocol), &port.Protocol)
	s.Ports = append(s.Ports, port)
}

var volumeSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "target", Required: true}, {Name: "shared"}},
}

func decodeVolume(d *decoder, s *config.Service, b *hcl.Block) {
	v := &config.Volume{Name: b.Labels[0]}
	s.Ranges[config.VolumeAttr(v.Name, "")] = cfgRange(b.DefRange)
	a := d.content(b.Body, volumeSchema).Attributes
	d.str(a, "target", config.VolumeAttr(v.Name, config.VolumeTarget), &v.Target)
	d.boolean(a, "shared", config.VolumeAttr(v.Name, config.VolumeShared), &v.Shared)
	s.Volumes = append(s.Volumes, v)
}

var healthSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "path"}, {Name: "status"}, {Name: "interval"}, {Name: "timeout"}, {Name: "healthy"}, {Name: "deadline"}},
}

func decodeHealth(d *decoder, s *config.Service, b *hcl.Block) {
	h := config.NewHealthCheck()
	s.Ranges[config.AttrHealth] = cfgRange(b.DefRange)
	a := d.content(b.Body, healthSchema).Attributes
	d.str(a, "path", config.AttrHealthPath, &h.Path)
	d.intList(a, "status", config.AttrHealthStatus, &h.Status)
	d.duration(a, "interval", config.AttrHealthInterval, &h.Interval)
	d.duration(a, "timeout", config.AttrHealthTimeout, &h.Timeout)
	d.duration(a, "deadline", config.AttrHealthDeadline, &h.Deadline)
	d.integer(a, "healthy", config.AttrHealthHealthy, &h.Healthy)
	s.HealthCheck = h
}

var canarySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "path", Required: true}, {Name: "status"}, {Name: "body_contains"}},
}

func decodeCanary(d *decoder, s *config.Service, b *hcl.Block) {
	c := &config.Canary{Name: b.Labels[0]}
	s.Ranges[config.CanaryAttr(c.Name, "")] = cfgRange(b.DefRange)
	a := d.content(b.Body, canarySchema).Attributes
	d.str(a, "path", config.CanaryAttr(c.Name, config.CanaryPath), &c.Path)
	d.intList(a, "status", config.CanaryAttr(c.Name, config.CanaryStatus), &c.Status)
	d.str(a, "body_contains", config.CanaryAttr(c.Name, config.CanaryBodyContains), &c.BodyContains)
	s.Canaries = append(s.Canaries, c)
}

var sqliteSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "volume", Required: true}, {Name: "path", Required: true}, {Name: "quick_check"}, {Name: "seed_if_empty"}},
}

func decodeSQLite(d *decoder, s *config.Service, b *hcl.Block) {
	db := config.NewSQLite(b.Labels[0])
	s.Ranges[config.SQLiteAttr(db.Name, "")] = cfgRange(b.DefRange)
	a := d.content(b.Body, sqliteSchema).Attributes
	d.str(a, "volume", config.SQLiteAttr(db.Name, config.SQLiteVolume), &db.Volume)
	d.str(a, "path", config.SQLiteAttr(db.Name, config.SQLitePath), &db.Path)
	d.boolean(a, "quick_check", config.SQLiteAttr(db.Name, config.SQLiteQuickCheck), &db.QuickCheck)
	d.command(a, "seed_if_empty", config.SQLiteAttr(db.Name, config.SQLiteSeedIfEmpty), &db.SeedIfEmpty)
	s.SQLite = append(s.SQLite, db)
}

var backupSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "store"}, {Name: "volumes", Required: true}, {Name: "consistency"}, {Name: "keep"}, {Name: "logs"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "volume", LabelNames: []string{"name"}}},
}

var backupVolumeSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "consistency", Required: true}},
}

func decodeBackup(d *decoder, s *config.Service, b *hcl.Block) {
	bk := config.NewBackup()
	s.Ranges[config.AttrBackup] = cfgRange(b.DefRange)
	c := d.content(b.Body, backupSchema)
	a := c.Attributes
	for _, vb := range c.Blocks {
		name := vb.Labels[0]
		if _, dup := bk.VolumeConsistency[name]; dup {
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate volume",
				Detail:  fmt.Sprintf("backup has two volume %q blocks in service %q; keep one.", name, s.Name),
				Subject: vb.DefRange.Ptr()})
			continue
		}
		if bk.VolumeConsistency == nil {
			bk.VolumeConsistency = map[string]config.Consistency{}
		}
		s.Ranges[config.BackupVolumeAttr(name, "")] = cfgRange(vb.DefRange)
		var cons config.Consistency
		enum(d, d.content(vb.Body, backupVolumeSchema).Attributes, "consistency", config.BackupVolumeAttr(name, config.BackupVolumeConsistency), &cons)
		bk.VolumeConsistency[name] = cons
	}
	d.storeRef(a["store"], &bk.Store)
	d.strList(a, "volumes", config.AttrBackupVolumes, &bk.Volumes)
	enum(d, a, "consistency", config.AttrBackupConsistency, &bk.Consistency)
	d.integer(a, "keep", config.AttrBackupKeep, &bk.Keep)
	d.boolean(a, "logs", config.AttrBackupLogs, &bk.Logs)
	s.Backup = bk
}

// storeRef reads backup.store: a reference backup_store.NAME (checked at the reference), or the
// store's name as a string.
func (d *decoder) storeRef(attr *hcl.Attribute, dst *string) {
	if attr == nil {
		return
	}
	d.ranges[config.AttrBackupStore] = cfgRange(attr.Expr.Range())
	if tr, diags := hcl.AbsTraversalForExpr(attr.Expr); !diags.HasErrors() && tr.RootName() == "backup_store" {
		if rd := d.l.checkRefs(attr.Expr, true, nil); rd.HasErrors() {
			d.diags = append(d.diags, rd...)
			return
		}
		if len(tr) == 2 {
			*dst = attrName(tr[1])
			return
		}
	}
	if val, ok := d.eval(attr, config.AttrBackupStore, cty.String); ok {
		d.note(config.AttrBackupStore, attr, val)
		val, _ = val.Unmark()
		*dst = val.AsString()
		if d.l.stores[*dst] == nil {
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unknown backup store",
				Detail:  fmt.Sprintf("No backup_store %q is declared.%s Write store = backup_store.NAME with a declared store.", *dst, suggest(*dst, storeNames(d.l.stores))),
				Subject: attr.Expr.Range().Ptr()})
		}
	}
}

func storeNames(m map[string]*config.Store) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

var hookSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "command", Required: true}},
}

func decodeHook(d *decoder, s *config.Service, b *hcl.Block) {
	h := &config.Hook{When: b.Labels[0]}
	s.Ranges[config.HookAttr(h.When, "")] = cfgRange(b.LabelRanges[0])
	d.command(d.content(b.Body, hookSchema).Attributes, "command", config.HookAttr(h.When, config.HookCommand), &h.Command)
	s.Hooks = append(s.Hooks, h)
}

var migrationSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "command", Required: true}, {Name: "sqlite"}, {Name: "deadline"}, {Name: "dry_run"},
		{Name: "allow_destructive"}, {Name: "hold_timeout"}},
}

func decodeMigration(d *decoder, s *config.Service, b *hcl.Block) {
	m := config.NewMigration()
	s.Ranges[config.AttrMigration] = cfgRange(b.DefRange)
	a := d.content(b.Body, migrationSchema).Attributes
	d.command(a, "command", config.AttrMigrationCommand, &m.Command)
	d.str(a, "sqlite", config.AttrMigrationSQLite, &m.SQLite)
	d.duration(a, "deadline", config.AttrMigrationDeadline, &m.Deadline)
	d.boolean(a, "dry_run", config.AttrMigrationDryRun, &m.DryRun)
	d.boolean(a, "allow_destructive", config.AttrMigrationAllowDestructive, &m.AllowDestructive)
	d.duration(a, "hold_timeout", config.AttrMigrationHoldTimeout, &m.HoldTimeout)
	s.Migration = m
}

var smokeSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "requests"}, {Name: "duration"}, {Name: "concurrency"}, {Name: "paths"},
		{Name: "max_error_rate"}, {Name: "p95"}},
}

// decodeSmoke decodes a smoke block. A duration without requests runs for the duration: the
// default count applies only when neither is written.
func decodeSmoke(d *decoder, s *config.Service, b *hcl.Block) {
	sm := config.NewSmoke()
	s.Ranges[config.AttrSmoke] = cfgRange(b.DefRange)
	a := d.content(b.Body, smokeSchema).Attributes
	if a["duration"] != nil && a["requests"] == nil {
		sm.Requests = 0
	}
	d.integer(a, "requests", config.AttrSmokeRequests, &sm.Requests)
	d.duration(a, "duration", config.AttrSmokeDuration, &sm.Duration)
	d.integer(a, "concurrency", config.AttrSmokeConcurrency, &sm.Concurrency)
	d.strList(a, "paths", config.AttrSmokePaths, &sm.Paths)
	if val, ok := d.eval(a["max_error_rate"], config.AttrSmokeMaxErrorRate, cty.Number); ok {
		d.note(config.AttrSmokeMaxErrorRate, a["max_error_rate"], val)
		val, _ = val.Unmark()
		sm.MaxErrorRate, _ = val.AsBigFloat().Float64()
	}
	d.duration(a, "p95", config.AttrSmokeP95, &sm.P95)
	s.Smoke = sm
}

var rolloutSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "batch"}, {Name: "wait"}},
}

// decodeRollout decodes a rollout block: batch is a number of engines or a share ("50%").
func decodeRollout(d *decoder, s *config.Service, b *hcl.Block) {
	s.Ranges[config.AttrRollout] = cfgRange(b.DefRange)
	a := d.content(b.Body, rolloutSchema).Attributes
	if val, ok := d.eval(a["batch"], config.AttrRolloutBatch, cty.DynamicPseudoType); ok {
		d.note(config.AttrRolloutBatch, a["batch"], val)
		val, _ = val.Unmark()
		s.Rollout.Batch = -1 // invalid unless read below
		switch {
		case val.Type() == cty.Number:
			if f := val.AsBigFloat(); f.IsInt() {
				n, _ := f.Int64()
				s.Rollout.Batch = int(max(-1, min(n, 1<<20)))
			}
		case val.Type() == cty.String:
			str := strings.TrimSpace(val.AsString())
			if pct, ok := strings.CutSuffix(str, "%"); ok {
				if n, err := strconv.Atoi(pct); err == nil {
					s.Rollout.Batch, s.Rollout.BatchPercent = 0, max(-1, min(n, 1000))
				}
			} else if n, err := strconv.Atoi(str); err == nil {
				s.Rollout.Batch = max(-1, min(n, 1<<20))
			}
		}
	}
	d.duration(a, "wait", config.AttrRolloutWait, &s.Rollout.Wait)
}

var deploySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "cutover"}, {Name: "drain"}, {Name: "stop_timeout"}, {Name: "auto_rollback"}, {Name: "keep_releases"}},
}

func decodeDeploy(d *decoder, s *config.Service, b *hcl.Block) {
	a := d.content(b.Body, deploySchema).Attributes
	dp := &s.Deploy
	enum(d, a, "cutover", config.AttrDeployCutover, &dp.Cutover)
	d.duration(a, "drain", config.AttrDeployDrain, &dp.Drain)
	d.duration(a, "stop_timeout", config.AttrDeployStopTimeout, &dp.StopTimeout)
	d.boolean(a, "auto_rollback", config.AttrDeployAutoRollback, &dp.AutoRollback)
	d.integer(a, "keep_releases", config.AttrDeployKeep, &dp.KeepReleases)
}

var resourcesSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "memory"}, {Name: "cpus"}},
}

// decodeResources decodes a resources block: memory as the engine writes sizes, cpus as a number.
func decodeResources(d *decoder, s *config.Service, b *hcl.Block) {
	r := &config.Resources{}
	s.Ranges[config.AttrResources] = cfgRange(b.DefRange)
	a := d.content(b.Body, resourcesSchema).Attributes
	d.size(a, "memory", config.AttrResourcesMemory, &r.Memory, nil)
	if val, ok := d.eval(a["cpus"], config.AttrResourcesCPUs, cty.Number); ok {
		d.note(config.AttrResourcesCPUs, a["cpus"], val)
		val, _ = val.Unmark()
		r.CPUs, _ = val.AsBigFloat().Float64()
	}
	s.Resources = r
}

var logSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "max_size"}, {Name: "max_files"}},
}

func decodeLog(d *decoder, s *config.Service, b *hcl.Block) {
	s.Log = &config.Log{}
	s.Ranges[config.AttrLog] = cfgRange(b.DefRange)
	a := d.content(b.Body, logSchema).Attributes
	d.size(a, "max_size", config.AttrLogMaxSize, nil, &s.Log.MaxSize)
	d.integer(a, "max_files", config.AttrLogMaxFiles, &s.Log.MaxFiles)
}
