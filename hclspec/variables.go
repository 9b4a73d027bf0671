package hclspec

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	ctyjson "github.com/zclconf/go-cty/cty/json"
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
	sensitive   bool
	declRange   hcl.Range
	validations []*validation

	value      cty.Value // marked when sensitive
	set        bool
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
		v, d := decodeVariable(b)
		diags = append(diags, d...)
		if v == nil || l.varByKey[v.name] != nil {
			continue
		}
		l.vars = append(l.vars, v)
		l.varByKey[v.name] = v
	}
	return diags
}

func decodeVariable(b *hcl.Block) (*variable, hcl.Diagnostics) {
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
		diags = append(diags, decodeConst(attr, cty.Bool, func(val cty.Value) { v.sensitive = val.True() })...)
	}
	if attr, ok := content.Attributes["default"]; ok {
		val, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() && !val.IsNull() {
			r := attr.Expr.Range()
			diags = append(diags, v.assign(val, "default", &r)...)
		}
	}
	for _, vb := range content.Blocks {
		vc, d := vb.Body.Content(validationSchema)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		val := &validation{condition: vc.Attributes["condition"].Expr, errorMessage: vc.Attributes["error_message"].Expr, declRange: vb.DefRange}
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

// assign converts a value to the variable's type and records where it came from.
func (v *variable) assign(val cty.Value, source string, rng *hcl.Range) hcl.Diagnostics {
	conv, err := convert.Convert(val, v.typ)
	if err != nil {
		subject := rng
		if subject == nil {
			subject = v.declRange.Ptr()
		}
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid value for variable",
			Detail:  fmt.Sprintf("The value for var.%s (from %s) does not fit its type %s: %s.", v.name, source, typeexpr.TypeString(v.typ), err),
			Subject: subject}}
	}
	if v.sensitive {
		conv = conv.Mark(sensitiveMark)
	}
	v.value, v.set, v.source, v.valueRange = conv, true, source, rng
	return nil
}

// assignVariables applies values from lowest to highest precedence: the environment, the
// directory's *.auto.vars.hcl files, then -var-file and -var in command-line order.
func (l *loader) assignVariables(autoVars []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, v := range l.vars {
		if raw, ok := l.env[EnvPrefix+v.name]; ok {
			diags = append(diags, l.assignRaw(v, raw, "environment variable "+EnvPrefix+v.name)...)
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
			diags = append(diags, l.assignJSON(v, arg.Value)...)
			continue
		}
		diags = append(diags, l.assignRaw(v, arg.Value, "-var "+arg.Name)...)
	}
	for _, v := range l.vars {
		if !v.set {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "No value for required variable",
				Detail: fmt.Sprintf("var.%s has no default and no value was given. Set it with -var %s=VALUE, %s%s=VALUE in the environment, or in a .auto.vars.hcl file.",
					v.name, v.name, EnvPrefix, v.name),
				Subject: v.declRange.Ptr()})
		}
	}
	return diags
}

// assignRaw sets a variable from a string given outside any file. Strings are taken literally;
// other types are parsed as HCL expressions under a made-up file name so that an error in them
// still points somewhere.
func (l *loader) assignRaw(v *variable, raw, source string) hcl.Diagnostics {
	if !v.typed || v.typ == cty.String {
		return v.assign(cty.StringVal(raw), source, nil)
	}
	name := fmt.Sprintf("<value for var.%s from %s>", v.name, source)
	l.parser.AddFile(name, &hcl.File{Bytes: []byte(raw)})
	if tokens, d := hclsyntax.LexExpression([]byte(raw), name, hcl.Pos{Line: 1, Column: 1}); !d.HasErrors() {
		if d := checkNesting(tokens); d.HasErrors() {
			return d
		}
	}
	expr, diags := hclsyntax.ParseExpression([]byte(raw), name, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		return diags
	}
	val, d := expr.Value(nil)
	if d.HasErrors() {
		return d
	}
	return v.assign(val, source, expr.Range().Ptr())
}

// assignJSON sets a variable from the JSON a saved plan recorded.
func (l *loader) assignJSON(v *variable, raw string) hcl.Diagnostics {
	if d := checkNestingJSON([]byte(raw), "the plan file's var."+v.name); d.HasErrors() {
		return d
	}
	ty := v.typ
	if ty == cty.DynamicPseudoType {
		implied, err := ctyjson.ImpliedType([]byte(raw))
		if err != nil {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid saved value", Detail: fmt.Sprintf("var.%s in the plan file: %v", v.name, err)}}
		}
		ty = implied
	}
	val, err := ctyjson.Unmarshal([]byte(raw), ty)
	if err != nil {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid saved value", Detail: fmt.Sprintf("var.%s in the plan file: %v", v.name, err)}}
	}
	return v.assign(val, "the plan file", nil)
}

func (l *loader) assignFile(path string) hcl.Diagnostics {
	file, diags := l.parse(path)
	if diags.HasErrors() {
		return diags
	}
	attrs, d := file.Body.JustAttributes()
	diags = append(diags, d...)
	for _, attr := range sortedAttrs(attrs) {
		v := l.varByKey[attr.Name]
		if v == nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Value for undeclared variable",
				Detail:  fmt.Sprintf("%s sets %q, but no variable of that name is declared.%s", path, attr.Name, suggest(attr.Name, l.varNames())),
				Subject: attr.NameRange.Ptr()})
			continue
		}
		val, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		r := attr.Expr.Range()
		diags = append(diags, v.assign(val, path, &r)...)
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
func (l *loader) validateVariables() hcl.Diagnostics {
	var diags hcl.Diagnostics
	funcs := functions(l.dir, l.env)
	for _, v := range l.vars {
		if !v.set {
			continue
		}
		ctx := &hcl.EvalContext{
			Variables: map[string]cty.Value{"var": cty.ObjectVal(map[string]cty.Value{v.name: v.value})},
			Functions: funcs,
		}
		for _, rule := range v.validations {
			track(rule.condition.Range())
			res, d := rule.condition.Value(ctx)
			if d.HasErrors() {
				diags = append(diags, d...)
				continue
			}
			res, _ = res.Unmark()
			res, err := convert.Convert(res, cty.Bool)
			if err != nil || res.IsNull() || !res.IsKnown() {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Invalid validation condition",
					Detail: "The condition must be true or false.", Subject: rule.condition.Range().Ptr()})
				continue
			}
			if res.True() {
				continue
			}
			msg := "(no error_message)"
			if m, d := rule.errorMessage.Value(ctx); !d.HasErrors() {
				if m.IsMarked() {
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
	}
	return diags
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
