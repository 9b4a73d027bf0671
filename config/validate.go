package config

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Error is a semantic error in a configuration, pointing at the offending expression.
type Error struct {
	Range   Range
	Summary string
	Detail  string // what to do about it
	// Safe is set when Detail quotes nothing of the value, which may then be sensitive: the
	// loader shows the detail of other errors about a sensitive value as a general sentence.
	Safe bool
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.Range.Filename, e.Range.Start.Line, e.Range.Start.Column, e.Summary, e.Detail)
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)
	// labelRE is for names that become parts of attribute paths, step names and references
	// (stores, canaries, databases): no dots, spaces or slashes.
	labelRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	// volumeRE is Docker's rule for volume names.
	volumeRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)
	ageRE    = regexp.MustCompile(`^age1[0-9a-z]+$`)
	// registryHostRE is a registry as image references name it: a domain with a dot or a
	// port, or localhost.
	registryHostRE = regexp.MustCompile(`^((localhost|[a-zA-Z0-9-]+(\.[a-zA-Z0-9-]+)+|\[[0-9a-fA-F:]+\])(:[0-9]+)?|[a-zA-Z0-9-]+:[0-9]+)$`)
	containerRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	envKeyRE       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
)

// Validate runs the semantic checks of a defaulted project. It returns every error it finds, in
// file order, not only the first.
func Validate(p *Project) []*Error {
	v := &validator{p: p}
	v.project()
	sort.SliceStable(v.errs, func(i, j int) bool {
		a, b := v.errs[i].Range, v.errs[j].Range
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Start.Byte < b.Start.Byte
	})
	return v.errs
}

type validator struct {
	p    *Project
	errs []*Error
}

func (v *validator) add(r Range, summary, detail string, args ...any) {
	v.errs = append(v.errs, &Error{Range: r, Summary: summary, Detail: fmt.Sprintf(detail, args...)})
}

// known reports whether a service attribute's value is known (Project.Unknown). An error about
// an unknown attribute itself is dropped by the loader, which knows its range; the checks that
// decide from one attribute and report at another ask here.
func (v *validator) known(s *Service, key string) bool {
	return v.p.Known("service." + s.Name + "." + key)
}

// at is the range of a service attribute, or of the service block when the attribute has none.
func at(s *Service, key string) Range {
	if r, ok := s.Ranges[key]; ok {
		return r
	}
	return s.DeclRange
}

func (v *validator) project() {
	p := v.p
	if p.Known("project") && !nameRE.MatchString(p.Name) {
		v.add(p.NameRange, "Invalid project name",
			"The project name %q becomes part of container names and labels: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit.", p.Name)
	}
	for _, st := range sortedStores(p.Stores) {
		v.store(st)
	}
	for _, host := range sortedKeys(p.Registries) {
		r := p.Registries[host]
		if !registryHostRE.MatchString(host) {
			v.add(r.DeclRange, "Invalid registry host", "registry %q: name the registry as image references do: a host name with a dot or a port (\"ghcr.io\", \"registry.example.com:5000\"), or \"docker.io\" for Docker Hub.", host)
		}
		if _, set := r.Ranges["password"]; set && !p.Sensitive["registry."+host+".password"] {
			at := r.Ranges["password"]
			v.add(at, "Registry password not sensitive", "registry %q: password must come from a variable declared sensitive = true, so that it is never printed or saved in a plan.", host)
		}
	}
	for _, name := range sortedKeys(p.Engines) {
		v.engine(p.Engines[name])
	}
	seenService := map[string]*Service{}
	seenContainer := map[string]*Service{}
	type portUse struct {
		s    *Service
		what string
	}
	type portKey struct {
		engine string
		port   int
	}
	seenPort := map[portKey]portUse{}
	for _, s := range p.Services {
		if prev, ok := seenService[s.Name]; ok {
			v.add(s.DeclRange, "Duplicate service", "A service named %q is already declared at %s; give each service its own name.", s.Name, pos(prev.DeclRange))
			continue
		}
		seenService[s.Name] = s
		if !v.known(s, AttrContainerName) {
			// Checked when known: its default may be another's name.
		} else if prev, ok := seenContainer[s.ContainerName]; ok {
			v.add(at(s, AttrContainerName), "Duplicate container name",
				"Service %q and service %q would both run as container %q; set container_name on one of them.", prev.Name, s.Name, s.ContainerName)
		} else {
			seenContainer[s.ContainerName] = s
		}
		v.service(s)
		for _, port := range s.Ports {
			for _, u := range []struct {
				n    int
				what string
			}{{port.Host, "host"}, {port.Candidate, "candidate"}} {
				if u.n == 0 {
					continue
				}
				key := PortAttr(port.Container, u.what)
				for _, e := range s.EngineNames() { // each engine is a host of its own
					pk := portKey{e, u.n}
					prev, taken := seenPort[pk]
					if !taken {
						seenPort[pk] = portUse{s, u.what}
						continue
					}
					if prev.s != s || u.what != "candidate" || prev.what != "host" || port.Host != port.Candidate { // else reported by service() as candidate == host
						where := ""
						if len(p.Engines) > 0 {
							where = " on engine " + e
						}
						v.add(at(s, key), "Port used twice",
							"Port %d is already the %s port of service %q%s; each host and candidate port must be used once across all services on an engine.", u.n, prev.what, prev.s.Name, where)
					}
					break // one error for the port
				}
			}
		}
	}
	for _, n := range p.Notifies {
		if !slices.Contains(NotifyKinds, n.Kind) {
			v.add(n.DeclRange, "Unknown notify kind", "notify %q is not a kind the deployer knows; use one of %s.", n.Kind, quoted(NotifyKinds))
		}
		for _, e := range n.On {
			if !slices.Contains(NotifyEvents, e) {
				v.add(n.DeclRange, "Unknown notify event", "notify %q %q: %q is not an event; use any of %s.", n.Kind, n.Name, e, quoted(NotifyEvents))
			}
		}
	}
}

// minMemory is the least memory the engine lets a container have.
const minMemory = 6 << 20

// minSigningKey is the shortest signing key accepted: a short one can be guessed offline from
// one signed manifest.
const minSigningKey = 16

func (v *validator) store(st *Store) {
	at := func(key string) Range {
		if r, ok := st.Ranges[key]; ok {
			return r
		}
		return st.DeclRange
	}
	if !labelRE.MatchString(st.Name) {
		v.add(st.DeclRange, "Invalid store name", "backup_store %q: use letters, digits, '_' and '-', so that backup_store.NAME can refer to it.", st.Name)
	}
	known := func(key string) bool { return v.p.Known("backup_store." + st.Name + "." + key) }
	switch {
	case !known("kind"):
		// The kind says what the store needs: checked when known.
	case st.Kind == StoreS3:
		if len(st.Bucket) < 3 {
			v.add(at("bucket"), "Invalid bucket", "backup_store %q needs a bucket name of at least 3 characters.", st.Name)
		}
		if st.SSE != "" && !slices.Contains(SSEModes, st.SSE) {
			v.add(at("sse"), "Invalid sse", "backup_store %q: sse %q: use one of %s, or leave it out.", st.Name, st.SSE, quoted(SSEModes))
		}
		if st.KMSKeyID != "" && st.SSE != "aws:kms" && known("sse") {
			v.add(at("kms_key_id"), "kms_key_id without aws:kms", "backup_store %q: kms_key_id is used with sse = \"aws:kms\" only; set sse or remove kms_key_id.", st.Name)
		}
	case st.Kind == StoreLocal:
		if st.Directory == "" && known("directory") {
			v.add(st.DeclRange, "Missing directory", "backup_store %q of kind local needs a directory.", st.Name)
		}
		if st.SSE != "" || st.KMSKeyID != "" {
			v.add(at("sse"), "Server-side encryption on a local store", "backup_store %q is a local directory: sse and kms_key_id are for S3; use encryption { age_recipients } to encrypt backups anywhere.", st.Name)
		}
	default:
		if st.Kind == "" {
			v.add(st.DeclRange, "Unknown store kind", "backup_store %q: set bucket (an S3 store) or directory (a local one), or kind = one of %s.", st.Name, quoted(StoreKinds))
		} else {
			v.add(at("kind"), "Unknown store kind", "backup_store %q: kind %q: use one of %s.", st.Name, st.Kind, quoted(StoreKinds))
		}
	}
	for i, r := range st.AgeRecipients {
		if !ageRE.MatchString(r) {
			v.add(at("encryption.age_recipients"), "Invalid age recipient", "backup_store %q: age_recipients[%d] %q is not an age recipient; write the public key age-keygen prints (age1...).", st.Name, i, r)
		}
	}
	if _, set := st.Ranges["encryption.age_recipients"]; set && len(st.AgeRecipients) == 0 {
		v.add(at("encryption.age_recipients"), "No age recipient", "backup_store %q: encryption needs at least one recipient in age_recipients.", st.Name)
	}
	if _, set := st.Ranges["signing_key"]; set {
		switch {
		case !v.p.Sensitive["backup_store."+st.Name+".signing_key"]:
			v.add(at("signing_key"), "Signing key not sensitive", "backup_store %q: signing_key must come from a variable declared sensitive = true, so that it is never printed or saved in a plan.", st.Name)
		case len(st.SigningKey) < minSigningKey && known("signing_key"):
			v.add(at("signing_key"), "Signing key too short", "backup_store %q: signing_key is shorter than %d characters; use at least %d random ones (openssl rand -hex 32).", st.Name, minSigningKey, minSigningKey)
			v.errs[len(v.errs)-1].Safe = true
		}
	}
}

// engineSchemes are the address forms docker.host and engine.host take.
var engineSchemes = []string{"unix://", "tcp://", "ssh://", "npipe://", "http://", "https://"}

func (v *validator) engine(e *Engine) {
	r := func(k string) Range {
		if x, ok := e.Ranges[k]; ok {
			return x
		}
		return e.DeclRange
	}
	switch {
	case e.Name == DefaultEngine:
		v.add(e.DeclRange, "Reserved engine name", "engine %q names the project's own engine (the docker block's); give this engine another name.", e.Name)
	case !labelRE.MatchString(e.Name):
		v.add(e.DeclRange, "Invalid engine name", "engine %q: use letters, digits, '_' and '-', starting with a letter or digit (it appears in output as service.NAME[%s]).", e.Name, e.Name)
	}
	ok := false
	for _, sch := range engineSchemes {
		ok = ok || strings.HasPrefix(e.Host, sch) && len(e.Host) > len(sch)
	}
	if !ok {
		v.add(r("host"), "Invalid engine host", "engine %q: host %q is not an engine address; write it as docker.host takes it: \"ssh://deploy@203.0.113.10\", \"tcp://10.0.0.5:2376\" or \"unix:///var/run/docker.sock\".", e.Name, e.Host)
	}
	if t := e.TLS; t != nil {
		if v.p.Known("engine."+e.Name+".host") && !strings.HasPrefix(e.Host, "tcp://") && !strings.HasPrefix(e.Host, "https://") {
			v.add(r("tls"), "TLS on a non-TCP engine", "engine %q: a tls block is for tcp:// engines; %q is reached another way. Remove the block, or use the engine's tcp:// address.", e.Name, e.Host)
		}
		if (t.Cert == "") != (t.Key == "") && v.p.Known("engine."+e.Name+".tls.cert") && v.p.Known("engine."+e.Name+".tls.key") {
			v.add(r("tls"), "Incomplete TLS client certificate", "engine %q: cert and key go together; set both, or neither (ca alone checks the engine's certificate).", e.Name)
		}
	}
}

// rollout checks the engines a service runs on and how it rolls out to them.
func (v *validator) rollout(s *Service) {
	seen := map[string]bool{}
	for _, e := range s.Engines {
		switch {
		case e != DefaultEngine && v.p.Engines[e] == nil:
			v.add(at(s, AttrEngines), "Unknown engine", "Service %q runs on engine %q, which is not declared; declare engine %q { host = \"...\" }, or use \"default\" for the project's own engine.", s.Name, e, e)
		case seen[e]:
			v.add(at(s, AttrEngines), "Engine listed twice", "Service %q lists engine %q twice; list each engine once.", s.Name, e)
		}
		seen[e] = true
	}
	if _, set := s.Ranges[AttrEngines]; set && len(s.Engines) == 0 {
		v.add(at(s, AttrEngines), "No engines", "Service %q lists no engines; list at least one, or remove engines to run it on the project's own engine.", s.Name)
	}
	if len(s.Engines) > 1 {
		switch {
		case len(s.SQLite) > 0:
			v.add(at(s, AttrEngines), "SQLite on several engines", "Service %q has an sqlite block and runs on %d engines: a SQLite file cannot be shared between hosts, and each engine would hold a database of its own. Run it on one engine.", s.Name, len(s.Engines))
		case s.Backup != nil && len(s.Backup.Volumes) > 0:
			v.add(at(s, AttrEngines), "Backed-up volumes on several engines", "Service %q backs up volumes and runs on %d engines: each engine holds volumes of its own, and a backup or restore would take one host's data for all. Run it on one engine.", s.Name, len(s.Engines))
		}
	}
	ro := s.Rollout
	if ro.Batch < 0 || ro.BatchPercent < 0 || ro.BatchPercent > 100 || ro.Batch == 0 && ro.BatchPercent == 0 {
		v.add(at(s, AttrRolloutBatch), "Invalid rollout batch", "batch: write a number of engines (1 or more) or a share of them (\"50%%\", 1%% to 100%%).")
	}
	if ro.Wait < 0 || ro.Wait > MaxRolloutWait {
		v.add(at(s, AttrRolloutWait), "Invalid rollout wait", "wait %s: use a duration from 0s to %s.", ro.Wait, MaxRolloutWait)
	}
}

func (v *validator) service(s *Service) {
	v.rollout(s)
	if !nameRE.MatchString(s.Name) {
		v.add(s.DeclRange, "Invalid service name", "Service name %q: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit.", s.Name)
	}
	if _, set := s.Ranges[AttrContainerName]; set && !containerRE.MatchString(s.ContainerName) {
		v.add(at(s, AttrContainerName), "Invalid container name", "%q is not a valid Docker container name: use letters, digits, '.', '_' and '-'.", s.ContainerName)
	}
	if s.Image == "" && v.known(s, AttrImage) {
		v.add(s.DeclRange, "Missing image", "Service %q needs an image (the image to run, or the tag to build when it has a build block).", s.Name)
	} else if strings.ContainsAny(s.Image, " \t\n") || s.Image != strings.TrimSpace(s.Image) {
		v.add(at(s, AttrImage), "Invalid image", "%q is not an image reference: it must not contain spaces.", s.Image)
	}
	if b := s.Build; b != nil {
		if path.IsAbs(b.Dockerfile) || strings.HasPrefix(path.Clean(b.Dockerfile), "..") {
			v.add(at(s, AttrBuildDockerfile), "Invalid dockerfile", "dockerfile %q must be a path inside the build context.", b.Dockerfile)
		}
	}
	for k := range s.Env {
		if !envKeyRE.MatchString(k) {
			v.add(at(s, AttrEnv), "Invalid environment variable name", "%q is not a valid environment variable name: use letters, digits and '_', not starting with a digit.", k)
		}
	}
	v.ports(s)
	volNames := v.volumes(s)
	v.health(s)
	v.canaries(s)
	v.sqlite(s, volNames)
	v.backup(s, volNames)
	v.hooks(s)
	v.migration(s)
	v.smoke(s)
	v.limits(s)
	v.deploy(s)
}

// ports checks the port blocks.
func (v *validator) ports(s *Service) {
	for _, port := range s.Ports {
		key := func(attr string) string { return PortAttr(port.Container, attr) }
		if port.Container < 1 || port.Container > 65535 {
			v.add(at(s, key(PortContainer)), "Invalid port", "container port %d is out of range; use 1 to 65535.", port.Container)
		}
		if port.Host < 1 || port.Host > 65535 {
			v.add(at(s, key(PortHost)), "Invalid port", "host port %d is out of range; use 1 to 65535.", port.Host)
		}
		if port.Candidate < 0 || port.Candidate > 65535 {
			v.add(at(s, key(PortCandidate)), "Invalid port", "candidate port %d is out of range; use 1 to 65535, or leave it out for a free port.", port.Candidate)
		}
		if port.Candidate != 0 && port.Candidate == port.Host {
			v.add(at(s, key(PortCandidate)), "Candidate port equals host port",
				"The candidate runs beside the live release, so it needs its own port: change candidate (%d) or leave it out to let the engine pick a free one.", port.Candidate)
		}
		if !slices.Contains(Protocols, port.Protocol) {
			v.add(at(s, key(PortProtocol)), "Invalid protocol", "protocol %q: use one of %s.", port.Protocol, quoted(Protocols))
		}
	}
}

// volumes checks the volume blocks, and returns the names of the volumes mounted.
func (v *validator) volumes(s *Service) map[string]bool {
	volNames := map[string]bool{}
	targets := map[string]string{}
	for _, vol := range s.Volumes {
		key := VolumeAttr(vol.Name, "")
		if !volumeRE.MatchString(vol.Name) {
			v.add(at(s, key), "Invalid volume name", "volume %q: Docker volume names have at least 2 characters, letters, digits, '_', '.' and '-', starting with a letter or digit.", vol.Name)
		}
		if volNames[vol.Name] {
			v.add(at(s, key), "Duplicate volume", "Volume %q is mounted twice in service %q; mount each volume once.", vol.Name, s.Name)
		}
		volNames[vol.Name] = true
		if !path.IsAbs(vol.Target) {
			v.add(at(s, VolumeAttr(vol.Name, VolumeTarget)), "Invalid volume target", "target %q must be an absolute path inside the container.", vol.Target)
		} else if other, ok := targets[path.Clean(vol.Target)]; ok {
			v.add(at(s, VolumeAttr(vol.Name, VolumeTarget)), "Duplicate volume target", "Volumes %q and %q both mount at %s; give each its own target.", other, vol.Name, vol.Target)
		} else {
			targets[path.Clean(vol.Target)] = vol.Name
		}
	}
	return volNames
}

// health checks the health_check block.
func (v *validator) health(s *Service) {
	if h := s.HealthCheck; h != nil {
		if s.HTTPPort() == nil {
			v.add(at(s, AttrHealth), "Health check without an HTTP port", "Service %q has a health_check but no port with protocol \"http\"; add a port block or remove the check.", s.Name)
		}
		v.httpPath(s, AttrHealthPath, h.Path)
		v.statuses(s, AttrHealthStatus, h.Status)
		v.positive(s, AttrHealthInterval, h.Interval)
		v.positive(s, AttrHealthTimeout, h.Timeout)
		v.positive(s, AttrHealthDeadline, h.Deadline)
		if h.Healthy < 1 {
			v.add(at(s, AttrHealthHealthy), "Invalid healthy count", "healthy is %d; at least 1 consecutive pass is needed.", h.Healthy)
		}
	}
}

// migration checks the migration block: it changes a declared database, which is backed up
// before the live data is touched.
func (v *validator) migration(s *Service) {
	m := s.Migration
	if m == nil {
		return
	}
	if len(m.Command) == 0 {
		v.add(at(s, AttrMigrationCommand), "Empty migration command", "migration needs a command to run in a one-off container of the new image, e.g. command = [\"./migrate.sh\"].")
	}
	db := s.MigrationDB()
	if db == nil {
		var names []string
		for _, d := range s.SQLite {
			names = append(names, d.Name)
		}
		if len(names) == 0 {
			v.add(at(s, AttrMigrationSQLite), "Migration without a database", "migration names sqlite %q, but service %q declares no sqlite block; declare the database it changes: sqlite \"main\" { volume = \"...\", path = \"...\" }.", m.SQLite, s.Name)
		} else {
			v.add(at(s, AttrMigrationSQLite), "Unknown sqlite block", "migration names sqlite %q, which service %q does not declare; use one of %s.", m.SQLite, s.Name, quoted(names))
		}
	} else if b := s.Backup; (b == nil || !slices.Contains(b.Volumes, db.Volume)) && v.known(s, AttrBackupVolumes) && v.known(s, SQLiteAttr(db.Name, SQLiteVolume)) {
		v.add(at(s, AttrMigration), "Migration without a backup", "A migration changes the live data of volume %q, so it is backed up first: add a backup block with volumes = [%q] (or add it to backup.volumes).", db.Volume, db.Volume)
	}
	v.positive(s, AttrMigrationDeadline, m.Deadline)
	v.positive(s, AttrMigrationHoldTimeout, m.HoldTimeout)
}

// smoke checks the smoke block, whose load is bounded whatever the configuration says.
func (v *validator) smoke(s *Service) {
	sm := s.Smoke
	if sm == nil {
		return
	}
	if s.HTTPPort() == nil {
		v.add(at(s, AttrSmoke), "Smoke without an HTTP port", "smoke sends HTTP requests to the candidate: service %q needs a port with protocol \"http\".", s.Name)
	}
	if sm.Requests < 0 || sm.Requests > MaxSmokeRequests {
		v.add(at(s, AttrSmokeRequests), "Invalid smoke requests", "requests is %d; use 1 to %d.", sm.Requests, MaxSmokeRequests)
	}
	if sm.Requests == 0 && sm.Duration == 0 && v.known(s, AttrSmokeRequests) && v.known(s, AttrSmokeDuration) {
		v.add(at(s, AttrSmokeRequests), "Unbounded smoke load", "smoke needs requests or a duration to know when to stop.")
	}
	if sm.Duration < 0 || sm.Duration > MaxSmokeDuration {
		v.add(at(s, AttrSmokeDuration), "Invalid smoke duration", "duration %s: use a positive duration up to %s.", sm.Duration, MaxSmokeDuration)
	}
	if sm.Concurrency < 1 || sm.Concurrency > MaxSmokeConcurrency {
		v.add(at(s, AttrSmokeConcurrency), "Invalid smoke concurrency", "concurrency is %d; use 1 to %d.", sm.Concurrency, MaxSmokeConcurrency)
	}
	if len(sm.Paths) == 0 {
		v.add(at(s, AttrSmokePaths), "No smoke paths", "paths lists the paths to request, e.g. paths = [\"/\"].")
	}
	for _, p := range sm.Paths {
		v.httpPath(s, AttrSmokePaths, p)
	}
	if sm.MaxErrorRate < 0 || sm.MaxErrorRate > 1 {
		v.add(at(s, AttrSmokeMaxErrorRate), "Invalid error rate", "max_error_rate is %g; use a fraction from 0 (no failed request allowed) to 1.", sm.MaxErrorRate)
	}
	v.positive(s, AttrSmokeP95, sm.P95)
}

// canaries checks the canary blocks.
func (v *validator) canaries(s *Service) {
	for _, c := range s.Canaries {
		key := CanaryAttr(c.Name, "")
		if !labelRE.MatchString(c.Name) {
			v.add(at(s, key), "Invalid canary name", "canary %q: use letters, digits, '_' and '-'.", c.Name)
		}
		if s.HTTPPort() == nil {
			v.add(at(s, key), "Canary without an HTTP port", "canary %q needs a port with protocol \"http\" on service %q.", c.Name, s.Name)
		}
		v.httpPath(s, CanaryAttr(c.Name, CanaryPath), c.Path)
		v.statuses(s, CanaryAttr(c.Name, CanaryStatus), c.Status)
	}
}

// sqlite checks the sqlite blocks: each names a mounted volume.
func (v *validator) sqlite(s *Service, volNames map[string]bool) {
	for _, db := range s.SQLite {
		key := SQLiteAttr(db.Name, "")
		if !labelRE.MatchString(db.Name) {
			v.add(at(s, key), "Invalid sqlite name", "sqlite %q: use letters, digits, '_' and '-'.", db.Name)
		}
		if !volNames[db.Volume] {
			v.add(at(s, SQLiteAttr(db.Name, SQLiteVolume)), "Unknown volume", "sqlite %q names volume %q, which service %q does not mount; use one of %s.", db.Name, db.Volume, s.Name, quoted(volumeNames(s)))
		}
		if db.Path == "" || path.IsAbs(db.Path) || strings.HasPrefix(path.Clean(db.Path), "..") {
			v.add(at(s, SQLiteAttr(db.Name, SQLitePath)), "Invalid database path", "path %q must be a file path relative to the volume.", db.Path)
		}
	}
}

// backup checks the backup block: a declared store and mounted volumes.
func (v *validator) backup(s *Service, volNames map[string]bool) {
	if b := s.Backup; b != nil {
		if v.p.Stores[b.Store] == nil {
			v.add(at(s, AttrBackupStore), "Unknown backup store", "backup_store %q is not declared; declare it or leave store out for the local default.", b.Store)
		}
		if len(b.Volumes) == 0 {
			v.add(at(s, AttrBackupVolumes), "Nothing to back up", "backup needs at least one volume in volumes; use one of %s.", quoted(volumeNames(s)))
		}
		listed := map[string]bool{}
		for _, name := range b.Volumes {
			if !volNames[name] {
				v.add(at(s, AttrBackupVolumes), "Unknown volume", "backup names volume %q, which service %q does not mount; use one of %s.", name, s.Name, quoted(volumeNames(s)))
			}
			if listed[name] {
				v.add(at(s, AttrBackupVolumes), "Volume listed twice", "backup lists volume %q twice; list each volume once.", name)
			}
			listed[name] = true
		}
		if !slices.Contains(Consistencies, b.Consistency) {
			v.add(at(s, AttrBackupConsistency), "Invalid consistency", "consistency %q: use one of %s.", b.Consistency, quoted(Consistencies))
		}
		for _, name := range sortedKeys(b.VolumeConsistency) {
			c := b.VolumeConsistency[name]
			if !listed[name] && v.known(s, AttrBackupVolumes) {
				v.add(at(s, BackupVolumeAttr(name, "")), "Volume not backed up", "backup has a volume %q block, but volumes does not list it; add it to volumes or remove the block.", name)
			}
			if !slices.Contains(Consistencies, c) {
				v.add(at(s, BackupVolumeAttr(name, BackupVolumeConsistency)), "Invalid consistency", "consistency %q: use one of %s.", c, quoted(Consistencies))
			}
		}
		if b.Keep < 1 {
			v.add(at(s, AttrBackupKeep), "Invalid keep", "keep is %d; at least 1 backup must be kept.", b.Keep)
		}
	}
}

// hooks checks the hook blocks.
func (v *validator) hooks(s *Service) {
	for _, h := range s.Hooks {
		if !slices.Contains(HookPoints, h.When) {
			v.add(at(s, HookAttr(h.When, "")), "Unknown hook", "hook %q: the deployer runs hooks at %s.", h.When, quoted(HookPoints))
		}
		if len(h.Command) == 0 {
			v.add(at(s, HookAttr(h.When, HookCommand)), "Empty hook command", "hook %q needs a command to run.", h.When)
		}
	}
}

// limits checks the resources and log blocks.
func (v *validator) limits(s *Service) {
	if r := s.Resources; r != nil {
		if _, set := s.Ranges[AttrResourcesMemory]; set && r.Memory < minMemory {
			v.add(at(s, AttrResourcesMemory), "Memory too small", "resources.memory is %d bytes; the engine needs at least 6m.", r.Memory)
		}
		if _, set := s.Ranges[AttrResourcesCPUs]; set && (r.CPUs < 0.01 || r.CPUs > 1024) {
			v.add(at(s, AttrResourcesCPUs), "Invalid cpus", "resources.cpus is %g; use a number of CPUs such as 0.5 or 2.", r.CPUs)
		}
	}
	if l := s.Log; l != nil {
		if _, set := s.Ranges[AttrLogMaxFiles]; set && l.MaxFiles < 1 {
			v.add(at(s, AttrLogMaxFiles), "Invalid max_files", "log.max_files is %d; keep at least 1 file.", l.MaxFiles)
		}
		if l.MaxFiles > 1 && l.MaxSize == "" && v.known(s, AttrLogMaxSize) {
			v.add(at(s, AttrLogMaxFiles), "max_files without max_size", "the engine rotates its log by size: set log.max_size too (\"10m\").")
		}
	}
}

// deploy checks the deploy block.
func (v *validator) deploy(s *Service) {
	d := s.Deploy
	if !slices.Contains(CutoverModes, d.Cutover) {
		v.add(at(s, AttrDeployCutover), "Invalid cutover", "cutover %q: use one of %s.", d.Cutover, quoted(CutoverModes))
	}
	v.positive(s, AttrDeployDrain, d.Drain)
	v.positive(s, AttrDeployStopTimeout, d.StopTimeout)
	if d.KeepReleases < 1 {
		v.add(at(s, AttrDeployKeep), "Invalid keep_releases", "keep_releases is %d; keep at least 1 previous release so that rollback has a target.", d.KeepReleases)
	}
}

func (v *validator) positive(s *Service, key string, d time.Duration) {
	if d <= 0 {
		v.add(at(s, key), "Invalid duration", "%s must be a positive duration such as \"500ms\", \"2s\" or \"1m30s\".", key)
	}
}

func (v *validator) httpPath(s *Service, key, p string) {
	if !strings.HasPrefix(p, "/") {
		v.add(at(s, key), "Invalid path", "%s %q must start with \"/\".", key, p)
	}
}

func (v *validator) statuses(s *Service, key string, codes []int) {
	for _, c := range codes {
		if c < 100 || c > 599 {
			v.add(at(s, key), "Invalid status", "%d is not an HTTP status; use codes from 100 to 599.", c)
		}
	}
}

func volumeNames(s *Service) []string {
	var names []string
	for _, v := range s.Volumes {
		names = append(names, v.Name)
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedStores(m map[string]*Store) []*Store {
	var out []*Store
	for _, st := range m {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func quoted[T ~string](list []T) string {
	if len(list) == 0 {
		return "(none)"
	}
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func pos(r Range) string {
	return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line)
}
