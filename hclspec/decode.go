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
// value, which it may not (secretNowhere). It is false when there is no value to use: the
// attribute is absent, has an error, holds a secret where none belongs, or is unknown (validate
// without a variable's value), which is recorded under key, as is the attribute's range and
// sensitivity.
func (d *decoder) eval(attr *hcl.Attribute, key string, ty cty.Type) (cty.Value, bool) {
	return d.evalPolicy(attr, key, ty, secretNowhere, false)
}

// evalPolicy is eval for an attribute that may hold a secret as policy says. When partial is
// set, a known collection with unknown elements is let through (a map of which some values are
// unknown: the caller records them one by one).
func (d *decoder) evalPolicy(attr *hcl.Attribute, key string, ty cty.Type, policy secretPolicy, partial bool) (cty.Value, bool) {
	if attr == nil {
		return cty.NilVal, false
	}
	if rd := d.l.checkRefs(attr.Expr, d.ctx.Variables["backup_store"] != cty.NilVal, nil); rd.HasErrors() {
		d.diags = append(d.diags, rd...)
		return cty.NilVal, false
	}
	// Where no secret may go, an expression that computes from one is refused before it is
	// evaluated: whether the evaluation would fail must not decide which error is shown. (A
	// reference alone, local.cfg.port, is looked at once evaluated: its marks are exact.)
	if policy == secretNowhere && !d.l.isReference(attr.Expr) && d.l.sensitiveExpr(attr.Expr, d.ctx) {
		d.refuseSecret(key, attr, policy)
		return cty.NilVal, false
	}
	val, diags := d.l.evaluate(attr.Expr, d.ctx)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal, false
	}
	val = d.l.markSensitive(val, attr.Expr, d.ctx)
	if !secretAllowed(val, policy) {
		d.refuseSecret(key, attr, policy)
		return cty.NilVal, false
	}
	if val.IsNull() {
		return cty.NilVal, false
	}
	// From here on an error about a value that holds a secret depends on the secret's value.
	secret := hasKnownSecret(val)
	conv, err := convert.Convert(val, ty)
	if err != nil {
		if secret {
			d.diags = append(d.diags, d.l.failSecret()...)
			return cty.NilVal, false
		}
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
			if secret {
				d.diags = append(d.diags, d.l.failSecret()...)
				return cty.NilVal, false
			}
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
				if secret {
					d.diags = append(d.diags, d.l.failSecret()...)
					return cty.NilVal, false
				}
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

// secret records a sensitive value: its path and its text, masked in what comes from outside the
// deployer (an app's output, an engine's error: Project.Derived). The deployer's own text shows
// it as (sensitive) from its path, never by searching for its text: a configuration chooses
// what a value computed from a secret is, and masking that text wherever it appears would tell
// which words it is.
func (d *decoder) secret(key string, attr *hcl.Attribute, val cty.Value) {
	d.sensitive(key, attr)
	d.p.Derived = appendSecrets(d.p.Derived, val, false)
}

// sensitive records that an attribute's value derives from a sensitive one.
func (d *decoder) sensitive(key string, attr *hcl.Attribute) {
	d.p.Sensitive[d.prefix+key] = true
	d.l.sensitiveRanges = append(d.l.sensitiveRanges, attr.Expr.Range())
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
		return strings.HasSuffix(path, "."+config.AttrBuildContext) || strings.HasSuffix(path, "."+config.AttrBuildDockerfile) || strings.HasSuffix(path, "."+config.AttrImage)
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
	return d.strPolicy(attrs, name, key, dst, secretNowhere)
}

// secretStr reads a string attribute that may be a secret (a password, a URL).
func (d *decoder) secretStr(attrs hcl.Attributes, name, key string, dst *string) bool {
	return d.strPolicy(attrs, name, key, dst, secretScalar)
}

func (d *decoder) strPolicy(attrs hcl.Attributes, name, key string, dst *string, policy secretPolicy) bool {
	val, ok := d.evalPolicy(attrs[name], key, cty.String, policy, false)
	if ok {
		d.note(key, attrs[name], val)
		// A semantic check of a secret's value (a signing key too short, a KMS key ID given)
		// depends on the secret: its error is not shown, unless the attribute is the variable
		// itself (signing_key = var.key), whose value it is about as given, like the
		// variable's own checks. (The checks of maps and commands are about their keys and
		// length, which no secret decides.)
		if hasKnownSecret(val) && !d.l.isVarReference(attrs[name].Expr) {
			d.l.secretRanges = append(d.l.secretRanges, attrs[name].Expr.Range())
		}
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
	d.strListPolicy(attrs, name, key, dst, secretNowhere)
}

// command reads a command: a list of words, each of which may be a secret (the list itself, and
// so its length, may not). Each sensitive word is recorded under config.ElemAttr.
func (d *decoder) command(attrs hcl.Attributes, name, key string, dst *[]string) {
	d.strListPolicy(attrs, name, key, dst, secretElems)
}

func (d *decoder) strListPolicy(attrs hcl.Attributes, name, key string, dst *[]string, policy secretPolicy) {
	if val, ok := d.evalPolicy(attrs[name], key, cty.List(cty.String), policy, false); ok {
		d.note(key, attrs[name], val)
		out := []string{}
		for it := val.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e.ContainsMarked() {
				d.p.Sensitive[d.prefix+config.ElemAttr(key, len(out))] = true
			}
			e, _ = e.UnmarkDeep()
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

// strMap decodes a map of strings whose values (not keys) may be secrets (env, build.args),
// recording sensitivity per key as "key.K".
func (d *decoder) strMap(attrs hcl.Attributes, name, key string, dst *map[string]string) {
	attr := attrs[name]
	val, ok := d.evalPolicy(attr, key, cty.Map(cty.String), secretValues, d.l.opts.Unknown)
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
