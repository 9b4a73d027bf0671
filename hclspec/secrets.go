package hclspec

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Secrets come from two places: variables declared sensitive, and the environment (DEPLOYER_VAR_*
// and env()), which is where CI keeps its secrets, so that every value read from it is sensitive
// whatever the configuration declares. A configuration from a pull request may try to learn a
// secret from anything the deployer shows, so:
//
//   - a sensitive value may go only where secrets belong (policy): the values of env and
//     build.args, the words of commands, a registry's credentials, a notify URL, a store's
//     signing key and KMS key ID. Anywhere else (a name, the image, a port, a duration, a map's
//     keys, a command's length) it is refused at the attribute, whatever the value: the plan's
//     shape and every name never depend on a secret. What is sensitive is decided from the
//     expression (it refers to something sensitive, or calls env()) as well as from cty's
//     marks, so that it never depends on the value;
//   - an error that depends on a secret's value (an expression computed from one fails, or a
//     value computed from one is invalid) is not shown: not its text, which can quote the value,
//     nor its place or number, which tell which of many checks failed. Loading stops with one
//     error that names nothing the configuration chose (secretFailure). Whether a plan fails is
//     the one bit a configuration can learn of a secret per run;
//   - a sensitive variable's own value that does not fit its type, is too short or fails its
//     validation rules is named (the variable), never shown, and which rule failed is not said.

// secretPolicy is where an attribute may hold a sensitive value.
type secretPolicy int

const (
	secretNowhere secretPolicy = iota // a name, an address, a number, an enumeration...
	secretScalar                      // the value itself (a password, a URL)
	secretValues                      // a map's values, not its keys (env, build.args)
	secretElems                       // a list's elements, not its length (a command's words)
)

// secretAllowed reports whether a value's marks are where the attribute's policy allows them.
// It looks only at where the marks are, which the expression decides, not the value.
func secretAllowed(val cty.Value, policy secretPolicy) bool {
	switch policy {
	case secretScalar:
		return true
	case secretValues, secretElems:
		if val.IsMarked() {
			return false // the map's keys or the list's length would depend on a secret
		}
		if !val.IsKnown() || val.IsNull() || !val.CanIterateElements() {
			return true
		}
		for it := val.ElementIterator(); it.Next(); {
			k, _ := it.Element()
			if k.IsMarked() {
				return false
			}
		}
		return true
	}
	return !val.ContainsMarked()
}

// refuseSecret is the error for a sensitive value where no secret belongs. It says nothing of
// the value, and is the same whatever the value is.
func (d *decoder) refuseSecret(key string, attr *hcl.Attribute, policy secretPolicy) {
	path := d.prefix + key
	where := "It names, counts or decides something the deployer shows in plans, names things after or contacts (an engine, a store, a file, the project), so its value would show."
	switch policy {
	case secretValues:
		where = "Its values may be secrets, not its keys: the keys are shown in plans."
	case secretElems:
		where = "Its words may be secrets, not the list itself: how many words there are is shown in plans."
	}
	summary := "Sensitive value not allowed here"
	if addressAttr(path) {
		summary = "Sensitive value in an address"
		where = "It names what the deployer connects to, reads or names after it (an engine, a backup store, an image, a file, the project), so the value would leave the deployer in a connection, a DNS query or an error; it is refused rather than used."
	}
	d.diags = append(d.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary,
		Detail: fmt.Sprintf("%s is computed from a sensitive value%s. %s Sensitive values are allowed only where secrets belong: the values of env and build.args, the words of commands, a registry's username and password, a notify url, a backup store's signing_key and kms_key_id. Write %s from values that are not sensitive: pass public values with -var (values from the environment are always sensitive).",
			path, sensitiveSources, where, path),
		Subject: attr.Expr.Range().Ptr(), Extra: safeDetail{}})
	// The attribute has no usable value: the checks that need it skip it, as for an unknown one.
	d.p.Unknown[path] = true
	d.l.unknownRanges = append(d.l.unknownRanges, attr.Expr.Range())
}

// sensitiveSources says where sensitive values come from, for errors about them.
const sensitiveSources = " (a variable declared sensitive, a value from the environment: DEPLOYER_VAR_* or env(), or a credential file read with file())"

// secretFailure is the one error shown when something that depends on a secret's value fails.
func (l *loader) secretFailure() *hcl.Diagnostic {
	var names []string
	for _, v := range l.vars {
		if v.sensitive && v.set {
			names = append(names, "var."+v.name)
		}
	}
	sort.Strings(names)
	from := "the environment (DEPLOYER_VAR_* and what env() reads)"
	if len(names) > 0 {
		from = strings.Join(names, ", ") + " and " + from
	}
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "A value computed from a secret is invalid",
		Detail: fmt.Sprintf("Evaluating the configuration failed on a value computed from a secret (%s). Which expression failed, and why, is not shown, nor any other error: each would tell something of the secret to whoever wrote the configuration. Run `deployer validate`, which checks everything without the secrets' values, and check the values given to the secrets the configuration uses.", from),
		Extra:  safeDetail{}}
}

// failSecret records a failure that depends on a secret's value: loading reports only it.
func (l *loader) failSecret() hcl.Diagnostics {
	l.secretFailed = true
	return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "A value computed from a secret is invalid", Extra: secretFailed{}}}
}

// secretFailed marks the placeholder diagnostic failSecret returns, replaced by secretFailure.
type secretFailed struct{}

// value evaluates expr, turning a panic of HCL or cty into an error (HCL's JSON syntax panics on
// an object key computed from a sensitive value) and telling the watch what is evaluated.
func (l *loader) value(expr hcl.Expression, ctx *hcl.EvalContext, secret bool) (val cty.Value, diags hcl.Diagnostics) {
	state := track(expr.Range(), secret || l.callsFunc(expr, "file"))
	l.current = state
	defer func() {
		if r := recover(); r != nil {
			val, diags = cty.NilVal, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot evaluate the expression",
				Detail:  "The deployer failed to evaluate this expression (a limit of the HCL library it uses, e.g. an object key in JSON syntax computed from a sensitive value). Write it another way.",
				Subject: expr.Range().Ptr(), Extra: safeDetail{}}}
		}
	}()
	return expr.Value(ctx)
}

// evaluate evaluates expr. When it depends on a secret's value and fails, the failure is
// recorded (failSecret) and its diagnostics, which can quote the value, are dropped.
func (l *loader) evaluate(expr hcl.Expression, ctx *hcl.EvalContext) (cty.Value, hcl.Diagnostics) {
	secret := l.dependsOnSecret(expr, ctx)
	l.touched = false
	val, diags := l.value(expr, ctx, secret)
	if (secret || l.touched) && diags.HasErrors() {
		return cty.NilVal, l.failSecret()
	}
	return val, diags
}

// dependsOnSecret reports whether evaluating expr can depend on a secret's value: it calls
// env() (outside validate, where env() is unknown), or refers to a variable or local that holds
// a known sensitive value. A JSON expression that cannot be analysed depends on one.
func (l *loader) dependsOnSecret(expr hcl.Expression, ctx *hcl.EvalContext) bool {
	syn, ok := l.syntaxOf(expr)
	if !ok {
		return true
	}
	if !l.opts.Unknown && callsFunc(syn, "env") {
		return true
	}
	for _, tr := range expr.Variables() {
		if v, ok := rootValue(tr, ctx); ok && hasKnownSecret(v) {
			return true
		}
	}
	return false
}

// rootValue is the value of var.NAME or local.NAME that a traversal starts with (the whole
// object when it names no attribute).
func rootValue(tr hcl.Traversal, ctx *hcl.EvalContext) (cty.Value, bool) {
	if ctx == nil || len(tr) == 0 {
		return cty.NilVal, false
	}
	if len(tr) > 2 {
		tr = tr[:2]
	}
	v, d := tr.TraverseAbs(ctx)
	if d.HasErrors() {
		return cty.NilVal, false
	}
	return v, true
}

// hasKnownSecret reports whether v holds a sensitive value that is known (in validate, a
// sensitive variable without a value is unknown: nothing of a secret is in it).
func hasKnownSecret(v cty.Value) bool {
	if !v.ContainsMarked() {
		return false
	}
	plain, paths := v.UnmarkDeepWithPaths()
	for _, pm := range paths {
		if _, ok := pm.Marks[sensitiveMark]; !ok {
			continue
		}
		if at, err := pm.Path.Apply(plain); err == nil && at.IsKnown() {
			return true
		}
	}
	return false
}

// callsFunc reports whether expr calls the function name anywhere (JSON that cannot be analysed:
// as if it did).
func (l *loader) callsFunc(expr hcl.Expression, name string) bool {
	syn, ok := l.syntaxOf(expr)
	return !ok || callsFunc(syn, name)
}

func callsFunc(syn []hclsyntax.Expression, name string) bool {
	found := false
	for _, e := range syn {
		hclsyntax.VisitAll(e, func(n hclsyntax.Node) hcl.Diagnostics {
			if c, ok := n.(*hclsyntax.FunctionCallExpr); ok && c.Name == name {
				found = true
			}
			return nil
		})
	}
	return found
}
