package hclspec

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Marks carry sensitivity through expressions and functions, with holes: HCL indexes an object
// with a marked key and drops the key's marks, so that
//
//	{ a = "a", b = "b", ... }[substr(var.secret, 0, 1)]
//
// is the secret's first character, unmarked; and whether a function marks its result can depend
// on its arguments' values. Rather than trust every path through HCL and cty, a value computed by
// an expression that refers to anything sensitive or calls env() is sensitive as a whole: what is
// sensitive then depends on the expression, never on a secret's value.

// sensitiveExpr reports whether the value of expr must be taken as sensitive whatever its marks
// say. JSON that cannot be analysed is (fail closed).
func (l *loader) sensitiveExpr(expr hcl.Expression, ctx *hcl.EvalContext) bool {
	syn, ok := l.syntaxOf(expr)
	return !ok || l.sensitiveSyntax(syn, ctx)
}

// sensitiveSyntax is sensitiveExpr for native-syntax expressions.
func (l *loader) sensitiveSyntax(syn []hclsyntax.Expression, ctx *hcl.EvalContext) bool {
	if callsFunc(syn, "env") {
		return true
	}
	for _, e := range syn {
		if l.refersToSecret(e.Variables(), ctx) {
			return true
		}
	}
	return false
}

// refersToSecret reports whether any of the references starts at a variable or local that
// holds anything sensitive.
func (l *loader) refersToSecret(refs []hcl.Traversal, ctx *hcl.EvalContext) bool {
	for _, tr := range refs {
		if v, ok := rootValue(tr, ctx); ok && v.ContainsMarked() {
			return true
		}
	}
	return false
}

// syntaxOf returns the native-syntax expressions of expr: itself, or, in JSON syntax, the
// templates its strings hold (parsed when they are evaluated, so read here from the source).
// It is false for JSON that cannot be read so.
func (l *loader) syntaxOf(expr hcl.Expression) ([]hclsyntax.Expression, bool) {
	if e, ok := expr.(hclsyntax.Expression); ok {
		return []hclsyntax.Expression{e}, true
	}
	raw, ok := l.jsonSource(expr)
	if !ok {
		return nil, false
	}
	return jsonTemplates(raw, expr.Range())
}

// jsonSource is the source text of a JSON-syntax expression.
func (l *loader) jsonSource(expr hcl.Expression) ([]byte, bool) {
	rng := expr.Range()
	f := l.parser.Files()[rng.Filename]
	if f == nil || rng.Start.Byte < 0 || rng.End.Byte > len(f.Bytes) || rng.Start.Byte > rng.End.Byte {
		return nil, false
	}
	return f.Bytes[rng.Start.Byte:rng.End.Byte], true
}

// jsonTemplates parses every string of a JSON value (object keys too) as HCL reads them.
func jsonTemplates(raw []byte, rng hcl.Range) ([]hclsyntax.Expression, bool) {
	// UseNumber: a number Go cannot hold as a float64 (1e400) is read, not a failure.
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	var out []hclsyntax.Expression
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			t, d := hclsyntax.ParseTemplate([]byte(v), rng.Filename, rng.Start)
			if d.HasErrors() {
				return false
			}
			out = append(out, t)
		case []any:
			for _, e := range v {
				if !walk(e) {
					return false
				}
			}
		case map[string]any:
			for k, e := range v {
				if !walk(k) || !walk(e) {
					return false
				}
			}
		}
		return true
	}
	return out, walk(v)
}

// markSensitive marks val as sensitive when its expression is (sensitiveExpr). An object or a
// tuple written out item by item is looked at item by item, so that an env map with one
// sensitive entry does not make its other entries, or its keys, sensitive; an object with a
// key computed from a secret is sensitive as a whole.
func (l *loader) markSensitive(val cty.Value, expr hcl.Expression, ctx *hcl.EvalContext) cty.Value {
	if val == cty.NilVal || val.IsMarked() {
		return val
	}
	switch e := expr.(type) {
	case *hclsyntax.ParenthesesExpr:
		return l.markSensitive(val, e.Expression, ctx)
	case *hclsyntax.ScopeTraversalExpr, *hclsyntax.TemplateWrapExpr:
		if pureReference(e.(hclsyntax.Expression)) {
			return val // var.x, local.x.y: the value as it is, with the marks it has
		}
	case *hclsyntax.FunctionCallExpr:
		if e.Name == "merge" && !e.ExpandFinal {
			if v, ok := l.markMerge(val, e, ctx); ok {
				return v
			}
		}
	case *hclsyntax.ObjectConsExpr:
		if !val.Type().IsObjectType() || !val.IsKnown() || val.IsNull() {
			break
		}
		attrs := val.AsValueMap()
		for _, item := range e.Items {
			if l.sensitiveExpr(item.KeyExpr, ctx) {
				return val.Mark(sensitiveMark) // a key computed from a secret
			}
			k, d := l.value(item.KeyExpr, ctx, l.dependsOnSecret(item.KeyExpr, ctx))
			if d.HasErrors() || !k.IsKnown() || k.IsNull() {
				return val.Mark(sensitiveMark) // cannot tell which item: all of it
			}
			k, _ = k.Unmark()
			k, err := convert.Convert(k, cty.String)
			if err != nil {
				return val.Mark(sensitiveMark)
			}
			if v, ok := attrs[k.AsString()]; ok {
				attrs[k.AsString()] = l.markSensitive(v, item.ValueExpr, ctx)
			}
		}
		if len(attrs) == 0 {
			return val
		}
		return cty.ObjectVal(attrs)
	case *hclsyntax.TupleConsExpr:
		if !val.Type().IsTupleType() || !val.IsKnown() || val.IsNull() || val.LengthInt() != len(e.Exprs) {
			break
		}
		elems := val.AsValueSlice()
		for i := range elems {
			elems[i] = l.markSensitive(elems[i], e.Exprs[i], ctx)
		}
		if len(elems) == 0 {
			return val
		}
		return cty.TupleVal(elems)
	}
	if _, native := expr.(hclsyntax.Expression); !native {
		if syn, ok := l.syntaxOf(expr); ok && len(syn) == 1 && pureReference(syn[0]) && isJSONString(l, expr) {
			return val
		}
	}
	if _, native := expr.(hclsyntax.Expression); !native && val.Type().IsObjectType() && val.IsKnown() && !val.IsNull() {
		if v, ok := l.markJSONObject(val, expr, ctx); ok {
			return v
		}
	}
	if l.sensitiveExpr(expr, ctx) {
		return val.Mark(sensitiveMark)
	}
	return val
}

// markJSONObject is markSensitive for an object written in JSON syntax, key by key.
func (l *loader) markJSONObject(val cty.Value, expr hcl.Expression, ctx *hcl.EvalContext) (cty.Value, bool) {
	src, ok := l.jsonSource(expr)
	var items map[string]json.RawMessage
	if !ok || json.Unmarshal(src, &items) != nil {
		return val, false
	}
	attrs := val.AsValueMap()
	for k, raw := range items {
		if strings.Contains(k, "${") || strings.Contains(k, "%{") {
			return val, false // a computed key: taken as a whole
		}
		v, ok := attrs[k]
		if !ok || v.IsMarked() {
			continue
		}
		syn, ok := jsonTemplates(raw, expr.Range())
		if !ok || l.sensitiveSyntax(syn, ctx) {
			attrs[k] = v.Mark(sensitiveMark)
		}
	}
	if len(attrs) == 0 {
		return val, true
	}
	return cty.ObjectVal(attrs), true
}

// pureReference reports whether e is a reference and nothing else (var.x, local.x.y, "${local.x}"
// alone), whose value is the value referred to, marks and all: what is sensitive in it is exactly
// what was sensitive there.
func pureReference(e hclsyntax.Expression) bool {
	if w, ok := e.(*hclsyntax.TemplateWrapExpr); ok {
		e = w.Wrapped
	}
	_, ok := e.(*hclsyntax.ScopeTraversalExpr)
	return ok
}

// isJSONString reports whether a JSON-syntax expression is one string (its templates are then
// the one syntaxOf returned).
func isJSONString(l *loader, expr hcl.Expression) bool {
	src, ok := l.jsonSource(expr)
	return ok && len(src) > 0 && src[0] == '"'
}

// markMerge is markSensitive for merge(...), as common in env maps as an object written out
// (merge(local.common, { TOKEN = var.token })): each argument is looked at as markSensitive
// looks at it, and each key of the result is as sensitive as the last argument that has it.
// An argument sensitive as a whole (its keys, then) makes the result so.
func (l *loader) markMerge(val cty.Value, e *hclsyntax.FunctionCallExpr, ctx *hcl.EvalContext) (cty.Value, bool) {
	isMap := func(v cty.Value) bool { return v.Type().IsObjectType() || v.Type().IsMapType() }
	if !val.IsKnown() || val.IsNull() || !isMap(val) || len(e.Args) == 0 {
		return val, false
	}
	args := make([]cty.Value, len(e.Args))
	for i, a := range e.Args {
		v, d := l.value(a, ctx, l.dependsOnSecret(a, ctx))
		if d.HasErrors() || !v.IsKnown() || v.IsNull() || !isMap(v) {
			return val, false
		}
		if v = l.markSensitive(v, a, ctx); v.IsMarked() {
			return val.Mark(sensitiveMark), true
		}
		args[i] = v
	}
	out := map[string]cty.Value{}
	for it := val.ElementIterator(); it.Next(); {
		k, ev := it.Element()
		key := k.AsString()
		for i := len(args) - 1; i >= 0; i-- {
			a, kv := args[i], cty.StringVal(key)
			var w cty.Value
			switch {
			case a.Type().IsObjectType() && a.Type().HasAttribute(key):
				w = a.GetAttr(key)
			case a.Type().IsMapType() && a.HasIndex(kv).True():
				w = a.Index(kv)
			default:
				continue
			}
			if w.ContainsMarked() && !ev.IsMarked() {
				ev = ev.Mark(sensitiveMark)
			}
			break
		}
		out[key] = ev
	}
	if len(out) == 0 {
		return val, true
	}
	if val.Type().IsMapType() {
		return cty.MapVal(out), true
	}
	return cty.ObjectVal(out), true
}

// isReference reports whether expr is a reference and nothing else (pureReference), in either
// syntax.
func (l *loader) isReference(expr hcl.Expression) bool {
	syn, ok := l.syntaxOf(expr)
	if !ok || len(syn) != 1 || !pureReference(syn[0]) {
		return false
	}
	_, native := expr.(hclsyntax.Expression)
	return native || isJSONString(l, expr)
}

// isVarReference reports whether expr is var.NAME and nothing else.
func (l *loader) isVarReference(expr hcl.Expression) bool {
	if !l.isReference(expr) {
		return false
	}
	syn, _ := l.syntaxOf(expr)
	e := syn[0]
	if w, ok := e.(*hclsyntax.TemplateWrapExpr); ok {
		e = w.Wrapped
	}
	tr := e.(*hclsyntax.ScopeTraversalExpr).Traversal
	return len(tr) == 2 && tr.RootName() == "var"
}
