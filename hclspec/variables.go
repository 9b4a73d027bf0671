package hclspec

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/deployer-dev/deployer/config"
)

// sensitiveMark is the cty mark carried by values derived from a sensitive variable; functions
// propagate it, and decoding records every attribute that carries it.
const sensitiveMark = "sensitive"

// EnvPrefix names the environment variables that set input variables.
const EnvPrefix = "DEPLOYER_VAR_"

type variable struct {
	name        string
	description string
	typ         cty.Type
	typed       bool
	declared    bool // sensitive = true
	sensitive   bool // the value is sensitive: declared so, or read from the environment
	declRange   hcl.Range
	validations []*validation

	value      cty.Value // marked when sensitive
	set        bool
	invalid    bool // a value was given that is invalid (its error says so; "no value" would not)
	unknown    bool // no value, and Options.Unknown: value is unknown
	source     string
	valueRange *hcl.Range // where the value was written, when it was written in a file
}

type validation struct {
	condition    hcl.Expression
	errorMessage hcl.Expression
	declRange    hcl.Range
}

func (l *loader) declareVariables(blocks []*hcl.Block) hcl.Diagnostics {
	var diags hcl.Diagnostics
	l.varByKey = map[string]*variable{}
	for _, b := range blocks {
		v, d := l.decodeVariable(b)
		diags = append(diags, d...)
		if v == nil || l.varByKey[v.name] != nil {
			continue
		}
		l.vars = append(l.vars, v)
		l.varByKey[v.name] = v
	}
	return diags
}

func (l *loader) decodeVariable(b *hcl.Block) (*variable, hcl.Diagnostics) {
	v := &variable{name: b.Labels[0], declRange: b.DefRange, typ: cty.DynamicPseudoType}
	if !hclsyntax.ValidIdentifier(v.name) {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid variable name",
			Detail: fmt.Sprintf("%q is not a valid name: use letters, digits, '_' and '-', starting with a letter.", v.name), Subject: b.LabelRanges[0].Ptr()}}
	}
	content, diags := b.Body.Content(variableSchema)
	if attr, ok := content.Attributes["type"]; ok {
		ty, d := typeexpr.TypeConstraint(attr.Expr)
		diags = append(diags, d...)
		if !d.HasErrors() {
			v.typ, v.typed = ty, true
		}
	}
	if attr, ok := content.Attributes["description"]; ok {
		diags = append(diags, decodeConst(attr, cty.String, func(val cty.Value) { v.description = val.AsString() })...)
	}
	if attr, ok := content.Attributes["sensitive"]; ok {
		diags = append(diags, decodeConst(attr, cty.Bool, func(val cty.Value) { v.declared, v.sensitive = val.True(), val.True() })...)
	}
	if attr, ok := content.Attributes["default"]; ok {
		val, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() && !val.IsNull() {
			r := attr.Expr.Range()
			diags = append(diags, v.assign(val, "default", &r, v.declared)...)
		}
	}
	for _, vb := range content.Blocks {
		vc, d := vb.Body.Content(validationSchema)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		val := &validation{condition: vc.Attributes["condition"].Expr, errorMessage: vc.Attributes["error_message"].Expr, declRange: vb.DefRange}
		// A rule checks its variable and nothing else: env() would read the CI's secrets, and
		// file() credential files, into a check whose failure the configuration's author sees.
		for _, e := range []hcl.Expression{val.condition, val.errorMessage} {
			for _, fn := range []string{"env", "file"} {
				if l.callsFunc(e, fn) {
					diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Function not allowed in variable validation",
						Detail:  fmt.Sprintf("A validation rule checks var.%s alone: it may not call %s(). Check what %s() reads where it is used.", v.name, fn, fn),
						Subject: e.Range().Ptr()})
				}
			}
		}
		for _, tr := range val.condition.Variables() {
			if tr.RootName() != "var" || len(tr) < 2 || attrName(tr[1]) != v.name {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid reference in variable validation",
					Detail:  fmt.Sprintf("The condition of a validation rule may refer only to the variable it checks, var.%s.", v.name),
					Subject: tr.SourceRange().Ptr()})
			}
		}
		v.validations = append(v.validations, val)
	}
	return v, diags
}

func attrName(t hcl.Traverser) string {
	switch s := t.(type) {
	case hcl.TraverseAttr:
		return s.Name
	case hcl.TraverseIndex:
		if s.Key.Type() == cty.String {
			return s.Key.AsString()
		}
	}
	return ""
}

// decodeConst evaluates an attribute that may not refer to anything.
func decodeConst(attr *hcl.Attribute, ty cty.Type, set func(cty.Value)) hcl.Diagnostics {
	val, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		return diags
	}
	val, err := convert.Convert(val, ty)
	if err != nil || val.IsNull() {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Incorrect attribute value type",
			Detail:  fmt.Sprintf("%s must be a %s.", attr.Name, ty.FriendlyName()),
			Subject: attr.Expr.Range().Ptr()}}
	}
	set(val)
	return nil
}

// assign converts a value to the variable's type and records where it came from; secret says
// that the value is sensitive (declared so, or read from the environment). Nothing of a
// sensitive value is quoted or pointed at: conversion errors can quote it (a map's keys), and
// the line it was written on holds it.
func (v *variable) assign(val cty.Value, source string, rng *hcl.Range, secret bool) hcl.Diagnostics {
	conv, err := convert.Convert(val, v.typ)
	if err != nil {
		subject, why := rng, err.Error()
		if subject == nil || secret {
			subject = v.declRange.Ptr()
		}
		if secret {
			why = "the value is sensitive, so the reason is not shown"
		}
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid value for variable",
			Detail:  fmt.Sprintf("The value for var.%s (from %s) does not fit its type %s: %s.", v.name, source, typeexpr.TypeString(v.typ), why),
			Subject: subject, Extra: safeDetail{}}}
	}
	if secret {
		conv = conv.Mark(sensitiveMark)
	}
	v.value, v.set, v.source, v.valueRange, v.sensitive = conv, true, source, rng, secret
	return nil
}

// tried records that a value given for the variable was invalid, when diags say so.
func (v *variable) tried(diags hcl.Diagnostics) hcl.Diagnostics {
	if diags.HasErrors() {
		v.invalid = true
	}
	return diags
}

// hiddenValue is the error for a sensitive value that does not parse: the parser's messages
// and the source line would show it.
func (v *variable) hiddenValue(source string) hcl.Diagnostics {
	return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid value for variable",
		Detail: fmt.Sprintf("The value for var.%s (from %s) is not a valid %s expression; it is sensitive, so it is not shown. Write it as HCL writes a value of that type (for a list: [\"a\", \"b\"]).",
			v.name, source, typeexpr.TypeString(v.typ)),
		Subject: v.declRange.Ptr(), Extra: safeDetail{}}}
}

// assignVariables applies values from lowest to highest precedence: the environment, the
// directory's *.auto.vars.hcl files, then -var-file and -var in command-line order. A value from
// the environment is sensitive whatever the variable declares: the environment is where CI
// keeps its secrets, and the configuration, which a pull request can change, cannot say
// otherwise. validate reads nothing from the environment (Options.Unknown).
func (l *loader) assignVariables(autoVars []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, v := range l.vars {
		if raw, ok := l.env[EnvPrefix+v.name]; ok && !l.opts.Unknown {
			diags = append(diags, v.tried(l.assignRaw(v, raw, "environment variable "+EnvPrefix+v.name, true))...)
		}
	}
	for _, f := range autoVars {
		diags = append(diags, l.assignFile(f)...)
	}
	for _, arg := range l.opts.Vars {
		if arg.File != "" {
			diags = append(diags, l.assignFile(arg.File)...)
			continue
		}
		v := l.varByKey[arg.Name]
		if v == nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value for undeclared variable",
				Detail: fmt.Sprintf("-var %s=...: no variable %q is declared.%s Declare it with a variable block, or fix the name.", arg.Name, arg.Name, suggest(arg.Name, l.varNames()))})
			continue
		}
		if arg.JSON {
			diags = append(diags, v.tried(l.assignJSON(v, arg.Value))...)
			continue
		}
		diags = append(diags, v.tried(l.assignRaw(v, arg.Value, "-var "+arg.Name, v.declared))...)
	}
	for _, v := range l.vars {
		if !v.set && l.opts.Unknown {
			v.value, v.unknown, v.source = cty.UnknownVal(v.typ), true, "no value (validate)"
			if v.declared {
				v.value = v.value.Mark(sensitiveMark)
			}
			continue
		}
		if !v.set && !v.invalid {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "No value for required variable",
				Detail: fmt.Sprintf("var.%s has no default and no value was given. Set it with -var %s=VALUE, %s%s=VALUE in the environment, or in a .auto.vars.hcl file.",
					v.name, v.name, EnvPrefix, v.name),
				Subject: v.declRange.Ptr()})
		}
	}
	return diags
}

// assignRaw sets a variable from a string given outside any file; secret says that the value is
// sensitive. Strings are taken literally; other types are parsed as HCL expressions under a
// made-up file name so that an error in them still points somewhere. A sensitive value's text
// is never kept as a source file whose lines could be shown, and its errors say only that it
// does not parse.
func (l *loader) assignRaw(v *variable, raw, source string, secret bool) hcl.Diagnostics {
	if !v.typed || v.typ == cty.String {
		return v.assign(cty.StringVal(raw), source, nil, secret)
	}
	name := fmt.Sprintf("<value for var.%s from %s>", v.name, source)
	if !secret {
		l.parser.AddFile(name, &hcl.File{Bytes: []byte(raw)})
	}
	// Nesting is checked on every token, lexical errors or not: the parser recurses as deep.
	tokens, _ := hclsyntax.LexExpression([]byte(raw), name, hcl.Pos{Line: 1, Column: 1})
	if d := checkNesting(tokens); d.HasErrors() {
		if secret {
			return v.hiddenValue(source)
		}
		return d
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), name, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		if secret {
			return v.hiddenValue(source)
		}
		return diags
	}
	val, d := l.value(expr, nil, secret)
	if d.HasErrors() {
		if secret {
			return v.hiddenValue(source)
		}
		return d
	}
	return v.assign(val, source, expr.Range().Ptr(), secret)
}

// assignJSON sets a variable from the JSON a saved plan recorded.
func (l *loader) assignJSON(v *variable, raw string) hcl.Diagnostics {
	if d := checkNestingJSON([]byte(raw), "the plan file's var."+v.name); d.HasErrors() {
		return d
	}
	invalid := func(err error) hcl.Diagnostics {
		if v.declared {
			return v.hiddenValue("the plan file")
		}
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid saved value", Detail: fmt.Sprintf("var.%s in the plan file: %v", v.name, err)}}
	}
	ty := v.typ
	if ty == cty.DynamicPseudoType {
		implied, err := ctyjson.ImpliedType([]byte(raw))
		if err != nil {
			return invalid(err)
		}
		ty = implied
	}
	val, err := ctyjson.Unmarshal([]byte(raw), ty)
	if err != nil {
		return invalid(err)
	}
	return v.assign(val, "the plan file", nil, v.declared)
}

// assignFile sets variables from a file of NAME = VALUE lines. A file that sets a sensitive
// variable (or that does not parse, when any is declared) is never shown: its lines hold secrets.
func (l *loader) assignFile(path string) hcl.Diagnostics {
	file, diags := l.parse(path)
	if diags.HasErrors() {
		for _, v := range l.vars {
			if v.declared {
				l.hide(displayName(path))
			}
		}
		return diags
	}
	attrs, d := file.Body.JustAttributes()
	diags = append(diags, d...)
	for _, attr := range attrs {
		if v := l.varByKey[attr.Name]; v != nil && v.declared {
			l.hide(displayName(path))
		}
	}
	for _, attr := range sortedAttrs(attrs) {
		v := l.varByKey[attr.Name]
		if v == nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value for undeclared variable",
				Detail:  fmt.Sprintf("%s sets %q, but no variable of that name is declared.%s", displayName(path), attr.Name, suggest(attr.Name, l.varNames())),
				Subject: attr.NameRange.Ptr()})
			continue
		}
		val, d := l.value(attr.Expr, nil, v.declared)
		diags = append(diags, v.tried(d)...)
		if d.HasErrors() {
			continue
		}
		r := attr.Expr.Range()
		diags = append(diags, v.tried(v.assign(val, displayName(path), &r, v.declared))...)
	}
	return diags
}

func (l *loader) varNames() []string {
	var names []string
	for _, v := range l.vars {
		names = append(names, v.name)
	}
	return names
}

// validateVariables runs every validation rule against the value the variable ended up with.
// For a sensitive value, the error names the variable and says no more: neither which rule
// failed (with many rules, which one would tell the value), nor the rule's message.
func (l *loader) validateVariables() hcl.Diagnostics {
	var diags hcl.Diagnostics
	funcs := l.functions()
	for _, v := range l.vars {
		if !v.set {
			continue // no value (validate): nothing to check
		}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.name: v.value})},
			Functions: funcs,
		}
		secret := v.sensitive && hasKnownSecret(v.value)
		failed := false
		for _, rule := range v.validations {
			res, d := l.value(rule.condition, ctx, secret)
			if secret {
				res, _ = res.Unmark()
				if d.HasErrors() || res.IsKnown() && !isTrue(res) {
					failed = true
				}
				continue
			}
			if d.HasErrors() {
				diags = append(diags, d...)
				continue
			}
			res, _ = res.Unmark()
			if !res.IsKnown() {
				continue // depends on something unknown (validate): checked when it is known
			}
			res, err := convert.Convert(res, cty.Bool)
			if err != nil || res.IsNull() {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid validation condition",
					Detail: "The condition must be true or false.", Subject: rule.condition.Range().Ptr()})
				continue
			}
			if res.True() {
				continue
			}
			msg := "(no error_message)"
			if m, d := l.value(rule.errorMessage, ctx, false); !d.HasErrors() {
				if m = l.markSensitive(m, rule.errorMessage, ctx); m.ContainsMarked() {
					msg = "The error message refers to a sensitive value and is not shown."
				} else if m, err := convert.Convert(m, cty.String); err == nil && !m.IsNull() {
					msg = strings.TrimSpace(m.AsString())
				}
			}
			subject := v.valueRange
			if subject == nil {
				subject = rule.condition.Range().Ptr()
			}
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for variable",
				Detail: fmt.Sprintf("var.%s (from %s): %s\n\nThis was checked by the validation rule at %s:%d.",
					v.name, v.source, msg, rule.declRange.Filename, rule.declRange.Start.Line),
				Subject: subject})
		}
		if failed {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid value for variable",
				Detail: fmt.Sprintf("The value of var.%s (from %s) does not pass its validation rules. It is sensitive, so which rule it fails, and why, is not shown: that would tell something of it to whoever wrote the rules. Check the value against the rules of the variable block.",
					v.name, v.source),
				Subject: v.declRange.Ptr(), Extra: safeDetail{}})
		}
	}
	return diags
}

// isTrue reports whether a known value is true; anything but a boolean is not.
func isTrue(v cty.Value) bool {
	v, err := convert.Convert(v, cty.Bool)
	return err == nil && !v.IsNull() && v.True()
}

func sortedAttrs(attrs hcl.Attributes) []*hcl.Attribute {
	out := make([]*hcl.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return less(out[i].Range, out[j].Range) })
	return out
}

func less(a, b hcl.Range) bool {
	if a.Filename != b.Filename {
		return a.Filename < b.Filename
	}
	return a.Start.Byte < b.Start.Byte
}

func (l *loader) hide(filename string) {
	if l.hidden == nil {
		l.hidden = map[string]bool{}
	}
	l.hidden[filename] = true
}

// minSecret is config.MinSecret: a shorter sensitive value is refused rather than shown.
const minSecret = config.MinSecret

// shortSecret reports whether a marked leaf of v (every leaf, when v is under a mark) is a
// string or number of 1 to minSecret-1 characters.
func shortSecret(v cty.Value, marked bool) bool {
	for _, s := range appendSecrets(nil, v, marked) {
		if n := utf8.RuneCountInString(s); n > 0 && n < minSecret {
			return true
		}
	}
	return false
}

// checkShortSecrets refuses sensitive variables whose values are too short to mask; the error
// names the variable, never the value. (A value computed from a secret is not checked: the
// deployer shows it as (sensitive) by where it is, never by searching for its text.)
func (l *loader) checkShortSecrets() hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, v := range l.vars {
		if v.sensitive && v.set && shortSecret(v.value, true) {
			fix := "Use a longer value, or declare the variable without sensitive = true."
			if !v.declared { // it came from the environment
				fix = "Values from the environment are always sensitive: pass a public value with -var " + v.name + "=VALUE instead."
			}
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Sensitive value too short",
				Detail: fmt.Sprintf("var.%s is sensitive, but its value (from %s) has fewer than %d characters: too short to be a secret worth the name, and masking it would mangle ordinary output, so the deployer refuses it rather than show it. %s",
					v.name, v.source, minSecret, fix),
				Subject: v.declRange.Ptr(), Extra: safeDetail{}})
		}
	}
	return diags
}
