package hclspec

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/deployer-dev/deployer/config"
)

// decoder evaluates attributes of one block into Go values, collecting diagnostics and the
// attribute paths whose values are sensitive.
type decoder struct {
	l      *loader
	ctx    *hcl.EvalContext
	diags  hcl.Diagnostics
	p      *config.Project
	prefix string                  // "service.NAME." for sensitive paths
	ranges map[string]config.Range // nil outside services
}

func (d *decoder) eval(attr *hcl.Attribute, ty cty.Type) (cty.Value, bool) {
	if attr == nil {
		return cty.NilVal, false
	}
	if rd := d.l.checkRefs(attr.Expr, d.ctx.Variables["backup_store"] != cty.NilVal, nil); rd.HasErrors() {
		d.diags = append(d.diags, rd...)
		return cty.NilVal, false
	}
	track(attr.Expr.Range())
	val, diags := attr.Expr.Value(d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	if val.IsNull() {
		return cty.NilVal, false
	}
	conv, err := convert.Convert(val, ty)
	if err != nil {
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Incorrect attribute value type",
			Detail:  fmt.Sprintf("%s must be %s: %s.", attr.Name, friendly(ty), err),
			Subject: attr.Expr.Range().Ptr()})
		return cty.NilVal, false
	}
	if !conv.IsWhollyKnown() {
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value not known",
			Detail: fmt.Sprintf("%s has no known value.", attr.Name), Subject: attr.Expr.Range().Ptr()})
		return cty.NilVal, false
	}
	if conv.Type().IsCollectionType() {
		for it := conv.ElementIterator(); it.Next(); {
			if _, e := it.Element(); e.IsNull() {
				d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Null element",
					Detail: fmt.Sprintf("%s must not contain null.", attr.Name), Subject: attr.Expr.Range().Ptr()})
				return cty.NilVal, false
			}
		}
	}
	return conv, true
}

func friendly(ty cty.Type) string {
	switch {
	case ty == cty.String:
		return "a string"
	case ty == cty.Number:
		return "a number"
	case ty == cty.Bool:
		return "true or false"
	case ty.IsListType():
		return "a list of " + strings.TrimPrefix(friendly(ty.ElementType()), "a ") + "s"
	case ty.IsMapType():
		return "a map of " + strings.TrimPrefix(friendly(ty.ElementType()), "a ") + "s"
	}
	return ty.FriendlyName()
}

// note records the attribute's range and, when its value is sensitive, its path and text.
func (d *decoder) note(key string, attr *hcl.Attribute, val cty.Value) {
	if d.ranges != nil {
		d.ranges[key] = cfgRange(attr.Expr.Range())
	}
	if val.ContainsMarked() {
		d.p.Sensitive[d.prefix+key] = true
		d.p.Secrets = appendSecrets(d.p.Secrets, val, false)
	}
}

// appendSecrets adds the text of every marked leaf of v (every leaf, when v is under a mark).
func appendSecrets(out []string, v cty.Value, marked bool) []string {
	if v.IsMarked() {
		marked = true
		v, _ = v.Unmark()
	}
	if v.IsNull() || !v.IsKnown() {
		return out
	}
	switch {
	case v.Type() == cty.String:
		if marked {
			out = append(out, v.AsString())
		}
	case v.Type() == cty.Number:
		if marked {
			out = append(out, v.AsBigFloat().Text('f', -1))
		}
	case v.CanIterateElements():
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			out = appendSecrets(out, e, marked)
		}
	}
	return out
}

func (d *decoder) str(attrs hcl.Attributes, name, key string, dst *string) bool {
	val, ok := d.eval(attrs[name], cty.String)
	if ok {
		d.note(key, attrs[name], val)
		val, _ = val.Unmark()
		*dst = val.AsString()
	}
	return ok
}

func (d *decoder) boolean(attrs hcl.Attributes, name, key string, dst *bool) {
	if val, ok := d.eval(attrs[name], cty.Bool); ok {
		d.note(key, attrs[name], val)
		val, _ = val.Unmark()
		*dst = val.True()
	}
}

func (d *decoder) integer(attrs hcl.Attributes, name, key string, dst *int) {
	if val, ok := d.eval(attrs[name], cty.Number); ok {
		d.note(key, attrs[name], val)
		val, _ = val.Unmark()
		n, acc := val.AsBigFloat().Int64()
		if acc != big.Exact || n < -1<<31 || n > 1<<31 {
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid number",
				Detail: fmt.Sprintf("%s must be a whole number.", name), Subject: attrs[name].Expr.Range().Ptr()})
			return
		}
		*dst = int(n)
	}
}

// duration parses Go's duration form ("500ms", "2s", "1m30s"); zero and negative are errors here
// because zero means "not set" to config.Defaults.
func (d *decoder) duration(attrs hcl.Attributes, name, key string, dst *time.Duration) {
	var s string
	if !d.str(attrs, name, key, &s) {
		return
	}
	dur, err := time.ParseDuration(s)
	if err != nil || dur <= 0 {
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid duration",
			Detail:  fmt.Sprintf("%s = %q is not a positive duration; write it like \"500ms\", \"2s\" or \"1m30s\".", name, s),
			Subject: attrs[name].Expr.Range().Ptr()})
		return
	}
	*dst = dur
}

func (d *decoder) strList(attrs hcl.Attributes, name, key string, dst *[]string) {
	if val, ok := d.eval(attrs[name], cty.List(cty.String)); ok {
		d.note(key, attrs[name], val)
		val, _ = val.UnmarkDeep()
		out := []string{}
		for it := val.ElementIterator(); it.Next(); {
			_, e := it.Element()
			out = append(out, e.AsString())
		}
		*dst = out
	}
}

func (d *decoder) intList(attrs hcl.Attributes, name, key string, dst *[]int) {
	if val, ok := d.eval(attrs[name], cty.List(cty.Number)); ok {
		d.note(key, attrs[name], val)
		val, _ = val.UnmarkDeep()
		var out []int
		for it := val.ElementIterator(); it.Next(); {
			_, e := it.Element()
			n, acc := e.AsBigFloat().Int64()
			if acc != big.Exact {
				d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid number",
					Detail: fmt.Sprintf("%s must hold whole numbers.", name), Subject: attrs[name].Expr.Range().Ptr()})
				return
			}
			out = append(out, int(n))
		}
		*dst = out
	}
}

// strMap decodes a map of strings, recording sensitivity per key as "key.K".
func (d *decoder) strMap(attrs hcl.Attributes, name, key string, dst *map[string]string) {
	attr := attrs[name]
	val, ok := d.eval(attr, cty.Map(cty.String))
	if !ok {
		return
	}
	if d.ranges != nil {
		d.ranges[key] = cfgRange(attr.Expr.Range())
	}
	whole := val.IsMarked()
	val, _ = val.Unmark()
	out := map[string]string{}
	for it := val.ElementIterator(); it.Next(); {
		k, e := it.Element()
		if whole || e.ContainsMarked() {
			d.p.Sensitive[d.prefix+key+"."+k.AsString()] = true
			d.p.Secrets = appendSecrets(d.p.Secrets, e, whole)
		}
		e, _ = e.UnmarkDeep()
		out[k.AsString()] = e.AsString()
	}
	*dst = out
}

func (d *decoder) content(body hcl.Body, schema *hcl.BodySchema) *hcl.BodyContent {
	c, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)
	return c
}

func (l *loader) decodeProject(p *config.Project, t *top) hcl.Diagnostics {
	d := &decoder{l: l, ctx: l.evalContext(false), p: p}
	if val, ok := d.eval(t.project, cty.String); ok {
		val, _ = val.Unmark()
		p.Name = val.AsString()
		p.NameRange = cfgRange(t.project.Expr.Range())
	}
	if t.docker != nil {
		c := d.content(t.docker.Body, dockerSchema)
		d.str(c.Attributes, "host", "docker.host", &p.Docker.Host)
		if a := c.Attributes["host"]; a != nil {
			p.Docker.HostRange = cfgRange(a.Expr.Range())
		}
		d.str(c.Attributes, "proxy_image", "docker.proxy_image", &p.Docker.ProxyImage)
		if a := c.Attributes["proxy_image"]; a != nil {
			p.Docker.ProxyImageRange = cfgRange(a.Expr.Range())
		}
	}
	p.Registries = map[string]*config.Registry{}
	for _, b := range t.registries {
		r := &config.Registry{Host: b.Labels[0], DeclRange: cfgRange(b.DefRange), Ranges: map[string]config.Range{}}
		d.prefix, d.ranges = "registry."+r.Host+".", r.Ranges
		a := d.content(b.Body, registrySchema).Attributes
		d.str(a, "username", "username", &r.Username)
		d.str(a, "password", "password", &r.Password)
		d.prefix, d.ranges = "", nil
		p.Registries[r.Host] = r
	}
	p.Stores = map[string]*config.Store{}
	l.stores = p.Stores
	for _, b := range t.stores {
		st := d.store(b)
		p.Stores[st.Name] = st
	}
	d.ctx = l.evalContext(true)
	for _, b := range t.services {
		if s := d.service(b); s != nil {
			p.Services = append(p.Services, s)
		}
	}
	d.prefix = ""
	d.ranges = nil
	for _, b := range t.notifies {
		n := &config.Notify{Kind: b.Labels[0], Name: b.Labels[1], DeclRange: cfgRange(b.DefRange)}
		c := d.content(b.Body, notifySchema)
		d.prefix = "notify." + n.Kind + "." + n.Name + "."
		d.str(c.Attributes, "url", "url", &n.URL)
		d.strList(c.Attributes, "on", "on", &n.On)
		p.Notifies = append(p.Notifies, n)
	}
	sort.Slice(p.Notifies, func(i, j int) bool {
		return p.Notifies[i].Kind+"."+p.Notifies[i].Name < p.Notifies[j].Kind+"."+p.Notifies[j].Name
	})
	return d.diags
}

// store decodes a backup_store block. Its kind is "kind", else its name when that is a kind,
// else what its attributes say (a bucket is S3, a directory is local).
func (d *decoder) store(b *hcl.Block) *config.Store {
	st := config.NewStore(b.Labels[0])
	st.DeclRange = cfgRange(b.DefRange)
	d.prefix, d.ranges = "backup_store."+st.Name+".", st.Ranges
	defer func() { d.prefix, d.ranges = "", nil }()
	c := d.content(b.Body, storeSchema)
	a := c.Attributes
	d.str(a, "kind", "kind", &st.Kind)
	d.str(a, "bucket", "bucket", &st.Bucket)
	d.str(a, "prefix", "prefix", &st.Prefix)
	d.str(a, "region", "region", &st.Region)
	d.str(a, "endpoint", "endpoint", &st.Endpoint)
	d.boolean(a, "path_style", "path_style", &st.PathStyle)
	d.str(a, "directory", "directory", &st.Directory)
	d.str(a, "signing_key", "signing_key", &st.SigningKey)
	d.str(a, "sse", "sse", &st.SSE)
	d.str(a, "kms_key_id", "kms_key_id", &st.KMSKeyID)
	single, diags := singleBlocks(c.Blocks, "encryption")
	d.diags = append(d.diags, diags...)
	if e := single["encryption"]; e != nil {
		st.Ranges["encryption"] = cfgRange(e.DefRange)
		d.strList(d.content(e.Body, encryptionSchema).Attributes, "age_recipients", "encryption.age_recipients", &st.AgeRecipients)
	}
	if st.Kind == "" {
		switch {
		case st.Name == "s3" || st.Name == "local":
			st.Kind = st.Name
		case a["bucket"] != nil && a["directory"] == nil:
			st.Kind = "s3"
		case a["directory"] != nil && a["bucket"] == nil:
			st.Kind = "local"
		}
	}
	return st
}

func (d *decoder) service(b *hcl.Block) *config.Service {
	s := config.NewService(b.Labels[0])
	s.DeclRange = cfgRange(b.DefRange)
	d.prefix = "service." + s.Name + "."
	d.ranges = s.Ranges
	c := d.content(b.Body, serviceSchema)
	a := c.Attributes
	d.str(a, "container_name", "container_name", &s.ContainerName)
	d.str(a, "image", "image", &s.Image)
	d.strList(a, "command", "command", &s.Command)
	d.strMap(a, "env", "env", &s.Env)
	d.boolean(a, "init", "init", &s.Init)

	single, diags := singleBlocks(c.Blocks, "build", "health_check", "backup", "deploy", "resources", "log")
	d.diags = append(d.diags, diags...)
	labelled := map[string]bool{}
	for _, blk := range c.Blocks {
		if len(blk.Labels) == 1 {
			k := blk.Type + "." + blk.Labels[0]
			if labelled[k] {
				d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate " + blk.Type,
					Detail:  fmt.Sprintf("%s %q is declared twice in service %q; give each its own name.", blk.Type, blk.Labels[0], s.Name),
					Subject: blk.DefRange.Ptr()})
				continue
			}
			labelled[k] = true
		}
		switch blk.Type {
		case "port":
			port := config.NewPort()
			pa := d.content(blk.Body, portSchema).Attributes
			d.integer(pa, "container", "port.container", &port.Container)
			// Ports are keyed by their container port, as config.Service.Attributes keys them.
			key := fmt.Sprintf("port.%d.", port.Container)
			if r, ok := s.Ranges["port.container"]; ok {
				delete(s.Ranges, "port.container")
				if _, dup := s.Ranges[key+"container"]; dup {
					d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate port",
						Detail:  fmt.Sprintf("Container port %d is published twice in service %q; publish each container port once.", port.Container, s.Name),
						Subject: hclRange(r).Ptr()})
				}
				s.Ranges[key+"container"] = r
			}
			d.integer(pa, "host", key+"host", &port.Host)
			d.integer(pa, "candidate", key+"candidate", &port.Candidate)
			d.str(pa, "protocol", key+"protocol", &port.Protocol)
			s.Ports = append(s.Ports, port)
		case "volume":
			v := &config.Volume{Name: blk.Labels[0]}
			s.Ranges["volume."+v.Name] = cfgRange(blk.DefRange)
			d.str(d.content(blk.Body, volumeSchema).Attributes, "target", "volume."+v.Name+".target", &v.Target)
			s.Volumes = append(s.Volumes, v)
		case "canary":
			cn := &config.Canary{Name: blk.Labels[0]}
			key := "canary." + cn.Name
			s.Ranges[key] = cfgRange(blk.DefRange)
			ca := d.content(blk.Body, canarySchema).Attributes
			d.str(ca, "path", key+".path", &cn.Path)
			d.intList(ca, "status", key+".status", &cn.Status)
			d.str(ca, "body_contains", key+".body_contains", &cn.BodyContains)
			s.Canaries = append(s.Canaries, cn)
		case "sqlite":
			db := config.NewSQLite(blk.Labels[0])
			key := "sqlite." + db.Name
			s.Ranges[key] = cfgRange(blk.DefRange)
			sa := d.content(blk.Body, sqliteSchema).Attributes
			d.str(sa, "volume", key+".volume", &db.Volume)
			d.str(sa, "path", key+".path", &db.Path)
			d.boolean(sa, "quick_check", key+".quick_check", &db.QuickCheck)
			d.strList(sa, "seed_if_empty", key+".seed_if_empty", &db.SeedIfEmpty)
			s.SQLite = append(s.SQLite, db)
		case "hook":
			h := &config.Hook{When: blk.Labels[0]}
			s.Ranges["hook."+h.When] = cfgRange(blk.LabelRanges[0])
			d.strList(d.content(blk.Body, hookSchema).Attributes, "command", "hook."+h.When+".command", &h.Command)
			s.Hooks = append(s.Hooks, h)
		}
	}
	if blk := single["build"]; blk != nil {
		s.Build = config.NewBuild()
		ba := d.content(blk.Body, buildSchema).Attributes
		d.str(ba, "context", "build.context", &s.Build.Context)
		d.str(ba, "dockerfile", "build.dockerfile", &s.Build.Dockerfile)
		d.strMap(ba, "args", "build.args", &s.Build.Args)
		d.strList(ba, "before", "build.before", &s.Build.Before)
	}
	if blk := single["health_check"]; blk != nil {
		h := config.NewHealthCheck()
		s.Ranges["health_check"] = cfgRange(blk.DefRange)
		ha := d.content(blk.Body, healthSchema).Attributes
		d.str(ha, "path", "health_check.path", &h.Path)
		d.intList(ha, "status", "health_check.status", &h.Status)
		d.duration(ha, "interval", "health_check.interval", &h.Interval)
		d.duration(ha, "timeout", "health_check.timeout", &h.Timeout)
		d.duration(ha, "deadline", "health_check.deadline", &h.Deadline)
		d.integer(ha, "healthy", "health_check.healthy", &h.Healthy)
		s.HealthCheck = h
	}
	if blk := single["backup"]; blk != nil {
		bk := config.NewBackup()
		s.Ranges["backup"] = cfgRange(blk.DefRange)
		ba := d.content(blk.Body, backupSchema).Attributes
		d.storeRef(ba["store"], &bk.Store)
		d.strList(ba, "volumes", "backup.volumes", &bk.Volumes)
		d.str(ba, "consistency", "backup.consistency", &bk.Consistency)
		d.integer(ba, "keep", "backup.keep", &bk.Keep)
		d.boolean(ba, "logs", "backup.logs", &bk.Logs)
		s.Backup = bk
	}
	if blk := single["resources"]; blk != nil {
		s.Resources = d.resources(blk)
	}
	if blk := single["log"]; blk != nil {
		s.Log = &config.Log{}
		s.Ranges["log"] = cfgRange(blk.DefRange)
		la := d.content(blk.Body, logSchema).Attributes
		d.size(la, "max_size", "log.max_size", nil, &s.Log.MaxSize)
		d.integer(la, "max_files", "log.max_files", &s.Log.MaxFiles)
	}
	if blk := single["deploy"]; blk != nil {
		da := d.content(blk.Body, deploySchema).Attributes
		dp := &s.Deploy
		d.str(da, "cutover", "deploy.cutover", &dp.Cutover)
		d.duration(da, "drain", "deploy.drain", &dp.Drain)
		d.duration(da, "stop_timeout", "deploy.stop_timeout", &dp.StopTimeout)
		d.boolean(da, "auto_rollback", "deploy.auto_rollback", &dp.AutoRollback)
		d.integer(da, "keep_releases", "deploy.keep_releases", &dp.KeepReleases)
	}
	return s
}

// resources decodes a resources block: memory as the engine writes sizes, cpus as a number.
func (d *decoder) resources(blk *hcl.Block) *config.Resources {
	r := &config.Resources{}
	d.ranges["resources"] = cfgRange(blk.DefRange)
	ra := d.content(blk.Body, resourcesSchema).Attributes
	d.size(ra, "memory", "resources.memory", &r.Memory, nil)
	if val, ok := d.eval(ra["cpus"], cty.Number); ok {
		d.note("resources.cpus", ra["cpus"], val)
		val, _ = val.Unmark()
		r.CPUs, _ = val.AsBigFloat().Float64()
	}
	return r
}

// size reads a size such as "512m" or "1g" into bytes (n) and/or its text (text).
func (d *decoder) size(attrs hcl.Attributes, name, key string, n *int64, text *string) {
	var s string
	if !d.str(attrs, name, key, &s) {
		return
	}
	b, ok := config.ParseBytes(s)
	if !ok {
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid size",
			Detail:  fmt.Sprintf("%s = %q is not a size; write it like \"512m\", \"1g\" or \"64k\".", name, s),
			Subject: attrs[name].Expr.Range().Ptr()})
		return
	}
	if n != nil {
		*n = b
	}
	if text != nil {
		*text = strings.ToLower(strings.TrimSpace(s))
	}
}

// storeRef reads backup.store: a reference backup_store.NAME (checked at the reference), or the
// store's name as a string.
func (d *decoder) storeRef(attr *hcl.Attribute, dst *string) {
	if attr == nil {
		return
	}
	d.ranges["backup.store"] = cfgRange(attr.Expr.Range())
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
	if val, ok := d.eval(attr, cty.String); ok {
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
