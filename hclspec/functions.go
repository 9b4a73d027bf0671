package hclspec

import (
	"fmt"
	"unicode/utf8"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// functions are the ones Terraform users know from the cty standard library, plus env(name) and
// file(path). env reads the environment handed to Load, not the process, so loading stays
// testable; file reads inside the configuration's directory only (paths.go).
func (l *loader) functions() map[string]function.Function {
	if l.funcs != nil {
		return l.funcs
	}
	funcs := map[string]function.Function{
		"abs":             stdlib.AbsoluteFunc,
		"ceil":            stdlib.CeilFunc,
		"chomp":           stdlib.ChompFunc,
		"chunklist":       stdlib.ChunklistFunc,
		"coalesce":        stdlib.CoalesceFunc,
		"coalescelist":    stdlib.CoalesceListFunc,
		"compact":         stdlib.CompactFunc,
		"concat":          stdlib.ConcatFunc,
		"contains":        stdlib.ContainsFunc,
		"distinct":        stdlib.DistinctFunc,
		"element":         stdlib.ElementFunc,
		"flatten":         stdlib.FlattenFunc,
		"floor":           stdlib.FloorFunc,
		"format":          stdlib.FormatFunc,
		"formatdate":      stdlib.FormatDateFunc,
		"formatlist":      stdlib.FormatListFunc,
		"indent":          stdlib.IndentFunc,
		"index":           stdlib.IndexFunc,
		"join":            stdlib.JoinFunc,
		"jsondecode":      stdlib.JSONDecodeFunc,
		"jsonencode":      stdlib.JSONEncodeFunc,
		"keys":            stdlib.KeysFunc,
		"length":          lengthFunc,
		"log":             stdlib.LogFunc,
		"lookup":          stdlib.LookupFunc,
		"lower":           stdlib.LowerFunc,
		"max":             stdlib.MaxFunc,
		"merge":           stdlib.MergeFunc,
		"min":             stdlib.MinFunc,
		"parseint":        stdlib.ParseIntFunc,
		"pow":             stdlib.PowFunc,
		"range":           stdlib.RangeFunc,
		"regex":           stdlib.RegexFunc,
		"regexall":        stdlib.RegexAllFunc,
		"regex_replace":   stdlib.RegexReplaceFunc,
		"replace":         stdlib.ReplaceFunc,
		"reverse":         stdlib.ReverseListFunc,
		"setintersection": stdlib.SetIntersectionFunc,
		"setproduct":      stdlib.SetProductFunc,
		"setsubtract":     stdlib.SetSubtractFunc,
		"setunion":        stdlib.SetUnionFunc,
		"signum":          stdlib.SignumFunc,
		"slice":           stdlib.SliceFunc,
		"sort":            stdlib.SortFunc,
		"split":           stdlib.SplitFunc,
		"strrev":          stdlib.ReverseFunc,
		"substr":          stdlib.SubstrFunc,
		"title":           stdlib.TitleFunc,
		"tobool":          stdlib.MakeToFunc(cty.Bool),
		"tolist":          stdlib.MakeToFunc(cty.List(cty.DynamicPseudoType)),
		"tomap":           stdlib.MakeToFunc(cty.Map(cty.DynamicPseudoType)),
		"tonumber":        stdlib.MakeToFunc(cty.Number),
		"toset":           stdlib.MakeToFunc(cty.Set(cty.DynamicPseudoType)),
		"tostring":        stdlib.MakeToFunc(cty.String),
		"trim":            stdlib.TrimFunc,
		"trimprefix":      stdlib.TrimPrefixFunc,
		"trimspace":       stdlib.TrimSpaceFunc,
		"trimsuffix":      stdlib.TrimSuffixFunc,
		"upper":           stdlib.UpperFunc,
		"values":          stdlib.ValuesFunc,
		"zipmap":          stdlib.ZipmapFunc,
		"env":             l.envFunc(),
		"file":            l.fileFunc(),
	}
	for name, f := range funcs {
		funcs[name] = bounded(name, f)
	}
	l.funcs = funcs
	return funcs
}

// envFunc returns env(name): the variable's value, or "" when it is unset. The environment of
// a CI job holds its secrets (AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, DEPLOYER_VAR_*), and a
// configuration from a pull request may ask for any of them: what env() returns is sensitive,
// always. validate reads nothing from the environment: there env() is an unknown string.
func (l *loader) envFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			if l.opts.Unknown {
				return cty.UnknownVal(cty.String).Mark(sensitiveMark), nil
			}
			val := l.env[args[0].AsString()]
			l.readSecret(val)
			return cty.StringVal(val).Mark(sensitiveMark), nil
		},
	})
}

// readSecret records that the expression being evaluated read a secret, and its text.
func (l *loader) readSecret(text string) {
	l.secrets = append(l.secrets, text)
	l.touched = true
	if l.current != nil {
		l.current.secret.Store(true)
	}
}

// fileFunc returns file(path): the UTF-8 contents of a regular file of at most MaxFileSize,
// inside the configuration's directory. A credential file (credentialFile: a private key, a
// name such files have) is sensitive; a file the configuration also names as an engine's TLS
// material is refused once that is known (checkCredentialReads).
func (l *loader) fileFunc() function.Function {
	return function.New(&function.Spec{
		Params: []function.Parameter{{Name: "path", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			p := args[0].AsString()
			if rel, err := l.fs.clean(p); err == nil {
				if real, err := l.fs.resolve(p, rel); err == nil && l.tlsPaths[real] != "" {
					return cty.NilVal, refuse("%q is the file the configuration names as %s: an engine's TLS material is read by the deployer alone, never into the configuration", p, l.tlsPaths[real])
				}
			}
			b, real, err := l.fs.readResolved(p, MaxFileSize)
			if err != nil {
				return cty.NilVal, err
			}
			if !utf8.Valid(b) {
				return cty.NilVal, fmt.Errorf("%q is not UTF-8 text", p)
			}
			val := cty.StringVal(string(b))
			if credentialFile(real, b) {
				l.readSecret(string(b))
				val = val.Mark(sensitiveMark)
			}
			if l.current != nil {
				l.fileReads = append(l.fileReads, fileRead{path: p, real: real, at: l.current.r})
			}
			return val, nil
		},
	})
}

// lengthFunc is length() as Terraform users know it: of a string (in characters) as well as of a
// collection.
var lengthFunc = function.New(&function.Spec{
	Params: []function.Parameter{{Name: "value", Type: cty.DynamicPseudoType, AllowDynamicType: true, AllowUnknown: true, AllowMarked: true}},
	Type:   function.StaticReturnType(cty.Number),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		v, marks := args[0].Unmark()
		if v.Type() == cty.String {
			n, err := stdlib.Strlen(v)
			return n.WithMarks(marks), err
		}
		n, err := stdlib.Length(v)
		return n.WithMarks(marks), err
	},
})
