package hclspec

import (
	"sort"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/deployer-dev/deployer/config"
)

// The project's top-level blocks besides variables and locals: each block's schema beside the
// function that decodes it. Services are in service.go.

func (l *loader) decodeProject(p *config.Project, t *top) hcl.Diagnostics {
	d := &decoder{l: l, ctx: l.evalContext(false), p: p}
	if val, ok := d.eval(t.project, "project", cty.String); ok {
		d.note("project", t.project, val)
		val, _ = val.Unmark()
		p.Name = val.AsString()
	}
	if t.project != nil {
		p.NameRange = cfgRange(t.project.Expr.Range())
	}
	if t.docker != nil {
		decodeDocker(d, p, t.docker)
	}
	p.Engines = map[string]*config.Engine{}
	for _, b := range t.engines {
		e := decodeEngine(d, b)
		p.Engines[e.Name] = e
	}
	l.engines = p.Engines
	p.Registries = map[string]*config.Registry{}
	for _, b := range t.registries {
		r := decodeRegistry(d, b)
		p.Registries[r.Host] = r
	}
	p.Stores = map[string]*config.Store{}
	l.stores = p.Stores
	for _, b := range t.stores {
		st := decodeStore(d, b)
		p.Stores[st.Name] = st
	}
	d.ctx = l.evalContext(true) // services may refer to stores
	for _, b := range t.services {
		p.Services = append(p.Services, d.service(b))
	}
	for _, b := range t.notifies {
		p.Notifies = append(p.Notifies, decodeNotify(d, b))
	}
	sort.Slice(p.Notifies, func(i, j int) bool {
		a, b := p.Notifies[i], p.Notifies[j]
		return string(a.Kind)+"."+a.Name < string(b.Kind)+"."+b.Name
	})
	return d.diags
}

var dockerSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "host"}, {Name: "proxy_image"}},
}

func decodeDocker(d *decoder, p *config.Project, b *hcl.Block) {
	d.prefix, d.ranges = "docker.", nil
	defer func() { d.prefix = "" }()
	a := d.content(b.Body, dockerSchema).Attributes
	d.str(a, "host", "host", &p.Docker.Host)
	if x := a["host"]; x != nil {
		p.Docker.HostRange = cfgRange(x.Expr.Range())
	}
	d.str(a, "proxy_image", "proxy_image", &p.Docker.ProxyImage)
	if x := a["proxy_image"]; x != nil {
		p.Docker.ProxyImageRange = cfgRange(x.Expr.Range())
	}
}

var (
	engineSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "host", Required: true}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "tls"}},
	}
	engineTLSSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "ca"}, {Name: "cert"}, {Name: "key"}},
	}
)

// decodeEngine decodes an engine block; its TLS files resolve against the configuration's
// directory.
func decodeEngine(d *decoder, b *hcl.Block) *config.Engine {
	e := &config.Engine{Name: b.Labels[0], DeclRange: cfgRange(b.DefRange), Ranges: map[string]config.Range{}}
	d.prefix, d.ranges = "engine."+e.Name+".", e.Ranges
	defer func() { d.prefix, d.ranges = "", nil }()
	c := d.content(b.Body, engineSchema)
	d.str(c.Attributes, "host", "host", &e.Host)
	single, diags := singleBlocks(c.Blocks, "tls")
	d.diags = append(d.diags, diags...)
	if t := single["tls"]; t != nil {
		e.Ranges["tls"] = cfgRange(t.DefRange)
		e.TLS = &config.EngineTLS{}
		a := d.content(t.Body, engineTLSSchema).Attributes
		for name, dst := range map[string]*string{"ca": &e.TLS.CA, "cert": &e.TLS.Cert, "key": &e.TLS.Key} {
			d.str(a, name, "tls."+name, dst) // checked, and made the file's real path, by checkPaths
		}
	}
	return e
}

var registrySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "username", Required: true}, {Name: "password", Required: true}},
}

func decodeRegistry(d *decoder, b *hcl.Block) *config.Registry {
	r := &config.Registry{Host: b.Labels[0], DeclRange: cfgRange(b.DefRange), Ranges: map[string]config.Range{}}
	d.prefix, d.ranges = "registry."+r.Host+".", r.Ranges
	defer func() { d.prefix, d.ranges = "", nil }()
	a := d.content(b.Body, registrySchema).Attributes
	d.secretStr(a, "username", "username", &r.Username)
	d.secretStr(a, "password", "password", &r.Password)
	return r
}

var (
	storeSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "kind"}, {Name: "bucket"}, {Name: "prefix"}, {Name: "region"}, {Name: "endpoint"},
			{Name: "path_style"}, {Name: "directory"}, {Name: "signing_key"}, {Name: "sse"}, {Name: "kms_key_id"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "encryption"}},
	}
	encryptionSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "age_recipients", Required: true}},
	}
)

// decodeStore decodes a backup_store block. Its kind is "kind", else its name when that is a
// kind, else what its attributes say (a bucket is S3, a directory is local).
func decodeStore(d *decoder, b *hcl.Block) *config.Store {
	st := config.NewStore(b.Labels[0])
	st.DeclRange = cfgRange(b.DefRange)
	d.prefix, d.ranges = "backup_store."+st.Name+".", st.Ranges
	defer func() { d.prefix, d.ranges = "", nil }()
	c := d.content(b.Body, storeSchema)
	a := c.Attributes
	enum(d, a, "kind", "kind", &st.Kind)
	d.str(a, "bucket", "bucket", &st.Bucket)
	d.str(a, "prefix", "prefix", &st.Prefix)
	d.str(a, "region", "region", &st.Region)
	d.str(a, "endpoint", "endpoint", &st.Endpoint)
	d.boolean(a, "path_style", "path_style", &st.PathStyle)
	d.str(a, "directory", "directory", &st.Directory)
	d.secretStr(a, "signing_key", "signing_key", &st.SigningKey)
	d.str(a, "sse", "sse", &st.SSE)
	d.secretStr(a, "kms_key_id", "kms_key_id", &st.KMSKeyID)
	single, diags := singleBlocks(c.Blocks, "encryption")
	d.diags = append(d.diags, diags...)
	if e := single["encryption"]; e != nil {
		st.Ranges["encryption"] = cfgRange(e.DefRange)
		d.strList(d.content(e.Body, encryptionSchema).Attributes, "age_recipients", "encryption.age_recipients", &st.AgeRecipients)
	}
	if st.Kind == "" {
		switch {
		case st.Name == string(config.StoreS3) || st.Name == string(config.StoreLocal):
			st.Kind = config.StoreKind(st.Name)
		case a["bucket"] != nil && a["directory"] == nil:
			st.Kind = config.StoreS3
		case a["directory"] != nil && a["bucket"] == nil:
			st.Kind = config.StoreLocal
		}
	}
	return st
}

var notifySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "url", Required: true}, {Name: "on"}},
}

func decodeNotify(d *decoder, b *hcl.Block) *config.Notify {
	n := &config.Notify{Kind: config.NotifyKind(b.Labels[0]), Name: b.Labels[1], DeclRange: cfgRange(b.DefRange)}
	d.prefix, d.ranges = "notify."+b.Labels[0]+"."+n.Name+".", nil
	defer func() { d.prefix = "" }()
	a := d.content(b.Body, notifySchema).Attributes
	d.secretStr(a, "url", "url", &n.URL)
	d.strList(a, "on", "on", &n.On)
	return n
}
