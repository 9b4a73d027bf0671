package hclspec

import (
	"fmt"

	"github.com/hashicorp/hcl/v2"
)

// The language, block by block. hcl checks every body against these, which is what turns an
// unknown attribute or block into an error with a "did you mean" suggestion.
var (
	rootSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "project"}},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "variable", LabelNames: []string{"name"}},
			{Type: "locals"},
			{Type: "docker"},
			{Type: "engine", LabelNames: []string{"name"}},
			{Type: "backup_store", LabelNames: []string{"name"}},
			{Type: "registry", LabelNames: []string{"host"}},
			{Type: "service", LabelNames: []string{"name"}},
			{Type: "notify", LabelNames: []string{"kind", "name"}},
		},
	}
	variableSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "type"}, {Name: "default"}, {Name: "description"}, {Name: "sensitive"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "validation"}},
	}
	validationSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "condition", Required: true}, {Name: "error_message", Required: true}},
	}
)

// top is the root of every file, gathered.
type top struct {
	project    *hcl.Attribute
	variables  []*hcl.Block
	locals     []*hcl.Block
	docker     *hcl.Block
	engines    []*hcl.Block
	stores     []*hcl.Block
	registries []*hcl.Block
	services   []*hcl.Block
	notifies   []*hcl.Block
}

func (l *loader) topLevel() (*top, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	t := &top{}
	for _, body := range l.bodies {
		content, d := body.Content(rootSchema)
		diags = append(diags, d...)
		if attr, ok := content.Attributes["project"]; ok {
			if t.project != nil {
				diags = append(diags, duplicate("project", attr.NameRange, t.project.NameRange))
			} else {
				t.project = attr
			}
		}
		for _, b := range content.Blocks {
			switch b.Type {
			case "variable":
				t.variables = append(t.variables, b)
			case "locals":
				t.locals = append(t.locals, b)
			case "docker":
				if t.docker != nil {
					diags = append(diags, duplicate("docker block", b.DefRange, t.docker.DefRange))
					continue
				}
				t.docker = b
			case "engine":
				t.engines = append(t.engines, b)
			case "backup_store":
				t.stores = append(t.stores, b)
			case "registry":
				t.registries = append(t.registries, b)
			case "service":
				t.services = append(t.services, b)
			case "notify":
				t.notifies = append(t.notifies, b)
			}
		}
	}
	if t.project == nil && !diags.HasErrors() {
		var subject *hcl.Range
		if len(l.bodies) > 0 {
			r := l.bodies[0].MissingItemRange()
			subject = &r
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing project",
			Detail:   `Every configuration names its project, which scopes labels, the deploy lock and backups: add project = "NAME" at the top of one file.`,
			Subject:  subject,
		})
	}
	diags = append(diags, uniqueLabels(t.variables, "variable")...)
	diags = append(diags, uniqueLabels(t.engines, "engine")...)
	diags = append(diags, uniqueLabels(t.stores, "backup_store")...)
	diags = append(diags, uniqueLabels(t.registries, "registry")...)
	diags = append(diags, uniqueLabels(t.services, "service")...)
	diags = append(diags, uniqueLabels(t.notifies, "notify")...)
	return t, diags
}

func duplicate(what string, at, first hcl.Range) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Duplicate " + what,
		Detail:   fmt.Sprintf("The %s is already set at %s:%d; keep one of them.", what, first.Filename, first.Start.Line),
		Subject:  at.Ptr(),
	}
}

// uniqueLabels reports blocks of one type declared twice with the same labels.
func uniqueLabels(blocks []*hcl.Block, what string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	seen := map[string]*hcl.Block{}
	for _, b := range blocks {
		key := fmt.Sprintf("%q", b.Labels)
		if first, ok := seen[key]; ok {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate " + what,
				Detail:   fmt.Sprintf("%s %s is already declared at %s:%d; give each its own name.", what, labelString(b.Labels), first.DefRange.Filename, first.DefRange.Start.Line),
				Subject:  b.DefRange.Ptr(),
			})
			continue
		}
		seen[key] = b
	}
	return diags
}

func labelString(labels []string) string {
	s := ""
	for i, l := range labels {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%q", l)
	}
	return s
}

// singleBlocks checks that blocks allowed once appear at most once, and returns them by type.
func singleBlocks(blocks hcl.Blocks, types ...string) (map[string]*hcl.Block, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	out := map[string]*hcl.Block{}
	for _, b := range blocks {
		for _, t := range types {
			if b.Type != t {
				continue
			}
			if first, ok := out[t]; ok {
				diags = append(diags, duplicate(t+" block", b.DefRange, first.DefRange))
				continue
			}
			out[t] = b
		}
	}
	return out, diags
}
