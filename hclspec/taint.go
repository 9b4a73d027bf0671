package hclspec

import (
	"encoding/json"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// Marks carry sensitivity through expressions and functions, with one hole: HCL indexes an
// object with a marked key and drops the key's marks, so that
//
//	{ a = "a", b = "b", ... }[substr(var.secret, 0, 1)]
//
// is the secret's first character, unmarked. Rather than trust every path through HCL and cty,
// a value computed by an expression that indexes with a computed key (coll[expr]) and refers
// to anything sensitive is sensitive as a whole.

// tainted reports whether the value of expr must be taken as sensitive whatever its marks say.
func (l *loader) tainted(expr hcl.Expression, ctx *hcl.EvalContext) bool {
	syn, ok := l.syntaxOf(expr)
	if !ok { // JSON that cannot be read here: any reference to a secret taints it
		return l.refersToSecret(expr.Variables(), ctx)
	}
	return l.taintedSyntax(syn, ctx)
}

// taintedSyntax is tainted for native-syntax expressions.
func (l *loader) taintedSyntax(syn []hclsyntax.Expression, ctx *hcl.EvalContext) bool {
	dynamic, callsEnv := false, false
	var refs []hcl.Traversal
	for _, e := range syn {
		hclsyntax.VisitAll(e, func(n hclsyntax.Node) hcl.Diagnostics {
			switch n := n.(type) {
			case *hclsyntax.IndexExpr:
				dynamic = true
			case *hclsyntax.FunctionCallExpr:
				callsEnv = callsEnv || n.Name == "env"
			}
			return nil
		})
		refs = append(refs, e.Variables()...)
	}
	return dynamic && (callsEnv || l.refersToSecret(refs, ctx))
}

// refersToSecret reports whether any of the references leads to a sensitive value.
func (l *loader) refersToSecret(refs []hcl.Traversal, ctx *hcl.EvalContext) bool {
	for _, tr := range refs {
		if v, d := tr.TraverseAbs(ctx); !d.HasErrors() && v.ContainsMarked() {
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
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
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

// markIfTainted marks val as sensitive when its expression is tainted. An object or a tuple
// written out item by item is looked at item by item, so that an env map with one tainted
// entry does not make its other entries sensitive.
func (l *loader) markIfTainted(val cty.Value, expr hcl.Expression, ctx *hcl.EvalContext) cty.Value {
	if val == cty.NilVal || val.IsMarked() {
		return val
	}
	switch e := expr.(type) {
	case *hclsyntax.ParenthesesExpr:
		return l.markIfTainted(val, e.Expression, ctx)
	case *hclsyntax.ObjectConsExpr:
		if !val.Type().IsObjectType() || !val.IsKnown() || val.IsNull() {
			break
		}
		attrs := val.AsValueMap()
		if attrs == nil {
			return val
		}
		for _, item := range e.Items {
			k, d := item.KeyExpr.Value(ctx)
			if d.HasErrors() || !k.IsKnown() || k.IsNull() {
				return val.Mark(sensitiveMark) // cannot tell which item: all of it
			}
			k, _ = k.Unmark() // a marked key marks the whole object already
			k, err := convert.Convert(k, cty.String)
			if err != nil {
				return val.Mark(sensitiveMark)
			}
			if v, ok := attrs[k.AsString()]; ok {
				attrs[k.AsString()] = l.markIfTainted(v, item.ValueExpr, ctx)
			}
		}
		return cty.ObjectVal(attrs)
	case *hclsyntax.TupleConsExpr:
		if !val.Type().IsTupleType() || !val.IsKnown() || val.IsNull() || val.LengthInt() != len(e.Exprs) {
			break
		}
		elems := val.AsValueSlice()
		for i := range elems {
			elems[i] = l.markIfTainted(elems[i], e.Exprs[i], ctx)
		}
		if len(elems) == 0 {
			return val
		}
		return cty.TupleVal(elems)
	}
	if _, native := expr.(hclsyntax.Expression); !native && val.Type().IsObjectType() && val.IsKnown() && !val.IsNull() {
		if v, ok := l.markJSONObject(val, expr, ctx); ok {
			return v
		}
	}
	if l.tainted(expr, ctx) {
		return val.Mark(sensitiveMark)
	}
	return val
}

// markJSONObject is markIfTainted for an object written in JSON syntax, key by key.
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
		if !ok || l.taintedSyntax(syn, ctx) {
			attrs[k] = v.Mark(sensitiveMark)
		}
	}
	if len(attrs) == 0 {
		return val, true
	}
	return cty.ObjectVal(attrs), true
}
