package hclspec

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// bounded wraps a function so that it cannot build a value larger than MaxCollection elements
// or MaxString bytes: the functions that can build a large value from a small one in one call
// are checked before they run (their arguments say how large the result will be), and every
// result is checked after.
//
// It also keeps a function's errors from quoting a sensitive value: the standard library's
// messages quote arguments (parseint: cannot parse "hunter2"; lookup: no attribute "hunter2";
// jsondecode: invalid character 'h'), so when an argument holds a sensitive value, the error
// says only that the call failed on one.
func bounded(name string, f function.Function) function.Function {
	// Every argument reaches the wrapper as it is, marked, unknown or of a type still unknown;
	// f deals with each as its own parameters declare (and marks its result).
	open := func(p *function.Parameter) {
		p.AllowMarked, p.AllowUnknown, p.AllowDynamicType = true, true, true
	}
	params := f.Params()
	for i := range params {
		open(&params[i])
	}
	varParam := f.VarParam()
	if varParam != nil {
		open(varParam)
	}
	return function.New(&function.Spec{
		Description: f.Description(),
		Params:      params,
		VarParam:    varParam,
		Type: func(args []cty.Value) (cty.Type, error) {
			ty, err := f.ReturnTypeForValues(args)
			return ty, hideSensitive(name, args, err)
		},
		Impl: func(args []cty.Value, _ cty.Type) (v cty.Value, err error) {
			defer func() {
				if r := recover(); r != nil {
					v, err = cty.NilVal, panicked(name)
				}
			}()
			if err := precheck(name, args); err != nil {
				return cty.NilVal, hideSensitive(name, args, err)
			}
			v, err = f.Call(args)
			if err != nil {
				return v, hideSensitive(name, args, err)
			}
			if err := checkSize(v); err != nil {
				return cty.NilVal, hideSensitive(name, args, fmt.Errorf("%s: %w", name, err))
			}
			return v, nil
		},
	})
}

// hideSensitive replaces an error of a call that has a sensitive argument, and the error of a
// function that panicked (cty makes it one, with the panic's value and a stack trace).
func hideSensitive(name string, args []cty.Value, err error) error {
	if err == nil {
		return nil
	}
	var pe function.PanicError
	if errors.As(err, &pe) {
		return panicked(name)
	}
	for _, a := range args {
		if a.ContainsMarked() {
			return fmt.Errorf("%s() failed on an argument computed from a sensitive value; the reason is not shown, as it could quote the value", name)
		}
	}
	return err
}

func tooLarge(what string, n float64, max int) error {
	return fmt.Errorf("the result would have %.0f %s, more than the %d the deployer allows in a configuration", n, what, max)
}

// precheck estimates the size of a result from the arguments, for the functions whose result
// can be far larger than their arguments.
func precheck(name string, args []cty.Value) error {
	for _, a := range args {
		if a, _ = a.Unmark(); !a.IsKnown() || a.IsNull() {
			return nil
		}
	}
	if check := prechecks[name]; check != nil {
		return check(name, args)
	}
	return nil
}

// prechecks estimate results by function name; the arguments are known and not null.
var prechecks = map[string]func(name string, args []cty.Value) error{
	"range":         rangeSize,
	"setproduct":    setproductSize,
	"concat":        concatSize,
	"join":          joinSize,
	"replace":       replaceSize,
	"regex_replace": replaceSize,
	"split":         splitSize,
	"indent":        indentSize,
	"format":        func(_ string, args []cty.Value) error { return checkFormat(argString(args[0])) },
	"formatlist":    func(_ string, args []cty.Value) error { return checkFormat(argString(args[0])) },
	"pow":           powSize,
	"parseint": func(_ string, args []cty.Value) error {
		if len(argString(args[0])) > 1000 {
			return fmt.Errorf("a number of more than 1000 digits")
		}
		return nil
	},
	"jsondecode": func(_ string, args []cty.Value) error {
		if d := checkNestingJSON([]byte(argString(args[0])), "jsondecode"); d.HasErrors() {
			return fmt.Errorf("the JSON nests more than %d levels deep", MaxNesting)
		}
		return nil
	},
}

func argString(v cty.Value) string { v, _ = v.Unmark(); return v.AsString() }

func argNumber(v cty.Value) float64 {
	v, _ = v.Unmark()
	f, _ := v.AsBigFloat().Float64()
	return f
}

// argLength is a collection's length, 1 for anything else.
func argLength(v cty.Value) int {
	v, _ = v.Unmark()
	if v.CanIterateElements() {
		return v.LengthInt()
	}
	return 1
}

func rangeSize(_ string, args []cty.Value) error {
	start, limit, step := 0.0, 0.0, 1.0
	switch len(args) {
	case 1:
		limit = argNumber(args[0])
	case 2:
		start, limit = argNumber(args[0]), argNumber(args[1])
	case 3:
		start, limit, step = argNumber(args[0]), argNumber(args[1]), argNumber(args[2])
	}
	if step != 0 {
		if n := math.Ceil((limit - start) / step); n > MaxCollection {
			return tooLarge("elements", n, MaxCollection)
		}
	}
	return nil
}

func setproductSize(_ string, args []cty.Value) error {
	n := 1.0
	for _, a := range args {
		n *= float64(argLength(a))
	}
	if n > MaxCollection {
		return tooLarge("elements", n, MaxCollection)
	}
	return nil
}

func concatSize(_ string, args []cty.Value) error {
	n := 0
	for _, a := range args {
		n += argLength(a)
	}
	if n > MaxCollection {
		return tooLarge("elements", float64(n), MaxCollection)
	}
	return nil
}

func joinSize(_ string, args []cty.Value) error {
	if len(args) < 1 {
		return nil
	}
	sep, total, count := len(argString(args[0])), 0, 0
	for _, l := range args[1:] {
		l, _ = l.Unmark()
		if !l.CanIterateElements() {
			continue
		}
		for it := l.ElementIterator(); it.Next(); {
			_, e := it.Element()
			if e, _ = e.Unmark(); e.Type() == cty.String && e.IsKnown() && !e.IsNull() {
				total += len(e.AsString())
			}
			count++
		}
	}
	if n := total + sep*count; n > MaxString {
		return tooLarge("bytes", float64(n), MaxString)
	}
	return nil
}

func replaceSize(name string, args []cty.Value) error {
	s, old, repl := argString(args[0]), argString(args[1]), argString(args[2])
	matches := 0
	isRegex := name == "regex_replace" || len(old) > 1 && strings.HasPrefix(old, "/") && strings.HasSuffix(old, "/")
	switch {
	case isRegex:
		pattern := old
		if name == "replace" {
			pattern = old[1 : len(old)-1]
		}
		if re, err := regexp.Compile(pattern); err == nil {
			matches = len(re.FindAllStringIndex(s, MaxString+1))
		}
	case old == "":
		matches = utf8.RuneCountInString(s) + 1
	default:
		matches = strings.Count(s, old)
	}
	if n := float64(len(s)) + float64(matches)*float64(len(repl)); n > MaxString {
		return tooLarge("bytes", n, MaxString)
	}
	return nil
}

func splitSize(_ string, args []cty.Value) error {
	s, sep := argString(args[1]), argString(args[0])
	n := strings.Count(s, sep) + 1
	if sep == "" {
		n = utf8.RuneCountInString(s)
	}
	if n > MaxCollection {
		return tooLarge("elements", float64(n), MaxCollection)
	}
	return nil
}

func indentSize(_ string, args []cty.Value) error {
	spaces, s := argNumber(args[0]), argString(args[1])
	if n := spaces*float64(strings.Count(s, "\n")+1) + float64(len(s)); n > MaxString {
		return tooLarge("bytes", n, MaxString)
	}
	return nil
}

func powSize(_ string, args []cty.Value) error {
	base, exp := math.Abs(argNumber(args[0])), math.Abs(argNumber(args[1]))
	if base > 1 && exp*math.Log10(base) > 10000 {
		return fmt.Errorf("the result would have more than 10000 digits")
	}
	return nil
}

// checkFormat refuses format verbs with a width or precision that would build a huge string.
var verbRE = regexp.MustCompile(`%[-+# 0]*(\[[0-9]+\])?([0-9]+|\*)?(\.([0-9]+|\*))?`)

func checkFormat(f string) error {
	for _, m := range verbRE.FindAllStringSubmatch(f, -1) {
		for _, n := range []string{m[2], m[4]} {
			if n == "*" {
				return fmt.Errorf("a format width or precision of * is not allowed")
			}
			if v, ok := new(big.Int).SetString(n, 10); ok && v.Cmp(big.NewInt(10000)) > 0 {
				return fmt.Errorf("a format width or precision of %s is more than 10000", n)
			}
		}
	}
	return nil
}

// checkSize fails when a value holds more than MaxCollection elements or MaxString bytes of
// strings in all.
func checkSize(v cty.Value) error {
	elems, bytes := 0, 0
	var walk func(v cty.Value) error
	walk = func(v cty.Value) error {
		v, _ = v.Unmark()
		if !v.IsKnown() || v.IsNull() {
			return nil
		}
		switch {
		case v.Type() == cty.String:
			bytes += len(v.AsString())
			if bytes > MaxString {
				return tooLarge("bytes of text", float64(bytes), MaxString)
			}
		case v.CanIterateElements():
			elems += v.LengthInt()
			if elems > MaxCollection {
				return tooLarge("elements", float64(elems), MaxCollection)
			}
			for it := v.ElementIterator(); it.Next(); {
				_, e := it.Element()
				if err := walk(e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(v)
}

// panicked is the error of a function that panicked: a defect, told without its value (which
// may be a secret) or a stack trace.
func panicked(name string) error {
	return fmt.Errorf("%s() failed unexpectedly (a defect of the deployer: please report it, with the call if you can share it)", name)
}
