package hclspec

import (
	"fmt"
	"math/big"
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

// eval evaluates an attribute into a value of type ty, marked when it derives from a sensitive
// value. It is false when there is no value to use: the attribute is absent, has an error, or is
// unknown (validate without a variable's value), which is recorded under key, as is the
// attribute's range and sensitivity.
func (d *decoder) eval(attr *hcl.Attribute, key string, ty cty.Type) (cty.Value, bool) {
	return d.evalPartial(attr, key, ty, false)
}

// evalPartial is eval that, when partial is set, lets a known collection with unknown elements
// through (a map of which some values are unknown: the caller records them one by one).
func (d *decoder) evalPartial(attr *hcl.Attribute, key string, ty cty.Type, partial bool) (cty.Value, bool) {
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
	val = d.l.markIfTainted(val, attr.Expr, d.ctx)
	if val.IsNull() {
		return cty.NilVal, false
	}
	conv, err := convert.Convert(val, ty)
	if err != nil {
		why := err.Error()
		if val.ContainsMarked() {
			why = "the value is sensitive, so it is not shown"
		}
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Incorrect attribute value type",
			Detail:  fmt.Sprintf("%s must be %s: %s.", attr.Name, friendly(ty), why),
			Subject: attr.Expr.Range().Ptr()})
		return cty.NilVal, false
	}
	if !conv.IsWhollyKnown() && !(partial && conv.IsKnown()) {
		if !d.l.opts.Unknown {
			d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value not known",
				Detail: fmt.Sprintf("%s has no known value.", attr.Name), Subject: attr.Expr.Range().Ptr()})
			return cty.NilVal, false
		}
		d.p.Unknown[d.prefix+key] = true
		d.l.unknownRanges = append(d.l.unknownRanges, attr.Expr.Range())
		if d.ranges != nil {
			d.ranges[key] = cfgRange(attr.Expr.Range())
		}
		if conv.ContainsMarked() {
			d.sensitive(key, attr)
		}
		return cty.NilVal, false
	}
	if plain, _ := conv.Unmark(); plain.Type().IsCollectionType() {
		for it := plain.ElementIterator(); it.Next(); {
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
		d.secret(key, attr, val)
	}
}

// secret records a sensitive value: its path, its text (to be masked) and its length, which
// must be enough to mask.
func (d *decoder) secret(key string, attr *hcl.Attribute, val cty.Value) {
	d.sensitive(key, attr)
	d.p.Secrets = appendSecrets(d.p.Secrets, val, false)
	if shortSecret(val, false) && !addressAttr(d.prefix+key) { // an address is refused anyway
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Sensitive value too short",
			Detail:  fmt.Sprintf("%s is computed from a sensitive value%s and comes out shorter than %d characters: the deployer can neither mask a value that short without mangling ordinary output nor show it, so it refuses it. Compute it from variables that are not sensitive.", d.prefix+key, sensitiveSources, minSecret),
			Subject: attr.Expr.Range().Ptr(), Extra: safeDetail{}})
	}
}

// sensitiveSources says where sensitive values come from, for errors about them.
const sensitiveSources = " (a variable declared sensitive, or env(), which is sensitive unless it reads DEPLOYER_VAR_ of a variable that is not)"

// sensitive records that an attribute's value derives from a sensitive one. An address the
// deployer contacts or a path it reads during plan is refused: the value would leave the
// deployer in a connection, a DNS query or an error.
func (d *decoder) sensitive(key string, attr *hcl.Attribute) {
	path := d.prefix + key
	d.p.Sensitive[path] = true
	d.l.sensitiveRanges = append(d.l.sensitiveRanges, attr.Expr.Range())
	if addressAttr(path) {
		d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Sensitive value in an address",
			Detail:  fmt.Sprintf("%s is computed from a sensitive value%s. It names what the deployer connects to, reads or names after it (an engine, a backup store, a file, the project), so the value would leave the deployer; it is refused rather than used. Write it from variables that are not sensitive.", path, sensitiveSources),
			Subject: attr.Expr.Range().Ptr(), Extra: safeDetail{}})
	}
}

// addressAttr reports whether an attribute path names something the deployer contacts or reads
// (during plan, too): engines, their TLS files, backup stores, build contexts; or the project,
// whose name is in every name the deployer gives on the engine and in the store.
func addressAttr(path string) bool {
	parts := strings.Split(path, ".")
	last := parts[len(parts)-1]
	switch parts[0] {
	case "project":
		return len(parts) == 1
	case "docker":
		return last == "host" || last == "proxy_image"
	case "engine":
		return last == "host" || len(parts) == 4 && parts[2] == "tls"
	case "backup_store":
		return len(parts) == 3 && (last == "kind" || last == "bucket" || last == "prefix" || last == "region" || last == "endpoint" || last == "directory")
	case "service":
		return strings.HasSuffix(path, "."+config.AttrBuildContext) || strings.HasSuffix(path, "."+config.AttrBuildDockerfile)
	}
	return false
}

// safeDetail marks a diagnostic written knowingly about a sensitive or unknown value: its
// detail quotes nothing of the value and it holds whatever the value is, so it is shown as it is.
type safeDetail struct{}

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
	val, ok := d.eval(attrs[name], key, cty.String)
	if ok {
		d.note(key, attrs[name], val)
		val, _ = val.Unmark()
		*dst = val.AsString()
	}
	return ok
}

func (d *decoder) boolean(attrs hcl.Attributes, name, key string, dst *bool) {
	if val, ok := d.eval(attrs[name], key, cty.Bool); ok {
		d.note(key, attrs[name], val)
		val, _ = val.Unmark()
		*dst = val.True()
	}
}

func (d *decoder) integer(attrs hcl.Attributes, name, key string, dst *int) {
	if val, ok := d.eval(attrs[name], key, cty.Number); ok {
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
	if val, ok := d.eval(attrs[name], key, cty.List(cty.String)); ok {
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
	if val, ok := d.eval(attrs[name], key, cty.List(cty.Number)); ok {
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
	val, ok := d.evalPartial(attr, key, cty.Map(cty.String), d.l.opts.Unknown)
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
		if whole {
			e = e.Mark(sensitiveMark)
		}
		if !e.IsKnown() { // validate without a variable's value: this entry is unknown
			d.p.Unknown[d.prefix+key+"."+k.AsString()] = true
			if e.IsMarked() {
				d.sensitive(key+"."+k.AsString(), attr)
			}
			continue
		}
		if e.ContainsMarked() {
			d.secret(key+"."+k.AsString(), attr, e)
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

// enum reads a string attribute into a value of one of config's enumerations; whether it is one
// of the values is checked with the rest (config.Validate).
func enum[T ~string](d *decoder, attrs hcl.Attributes, name, key string, dst *T) {
	var v string
	if d.str(attrs, name, key, &v) {
		*dst = T(v)
	}
}
