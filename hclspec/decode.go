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
