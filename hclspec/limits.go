package hclspec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// A configuration can come from an untrusted pull request, and `plan` and `validate` run on it
// in CI: no input may crash the deployer, hang it, or make it use unbounded memory. The parser
// and the evaluator recurse as deep as an expression nests, so nesting is measured before
// parsing; functions that can build a large value from a small one are bounded (functions.go);
// what is left (for expressions over large collections) is bounded by the memory and time
// watch of the command line (Watch).
const (
	// MaxNesting bounds how deep an expression nests: brackets, templates, and chains of
	// operators, calls and indexes, each of which is a level of the parser's recursion.
	MaxNesting = 1000
	// MaxFileSize bounds a configuration file, a variables file, and what file() reads.
	MaxFileSize = 4 << 20
	// MaxCollection bounds the elements of a value a function returns.
	MaxCollection = 100_000
	// MaxString bounds the length of a string a function returns.
	MaxString = 16 << 20
)

// checkNesting reads the tokens of native syntax (a file, or one expression) and fails at the
// first place that nests deeper than MaxNesting.
func checkNesting(tokens hclsyntax.Tokens) hcl.Diagnostics {
	level, ops := 0, 0
	var stack []int
	for _, t := range tokens {
		switch t.Type {
		case hclsyntax.TokenOBrace, hclsyntax.TokenOBrack, hclsyntax.TokenOParen, hclsyntax.TokenOQuote,
			hclsyntax.TokenOHeredoc, hclsyntax.TokenTemplateInterp, hclsyntax.TokenTemplateControl:
			// An opener is a level of its own, and a step of the chain it continues
			// (x[a][a] or f(x)(y) nest as deep as they are long).
			ops++
			stack = append(stack, ops)
			level += 2
			ops = 0
		case hclsyntax.TokenCBrace, hclsyntax.TokenCBrack, hclsyntax.TokenCParen, hclsyntax.TokenCQuote,
			hclsyntax.TokenCHeredoc, hclsyntax.TokenTemplateSeqEnd:
			if len(stack) == 0 {
				continue // unbalanced: the parser says so
			}
			level -= ops + 1
			ops = stack[len(stack)-1]
			stack = stack[:len(stack)-1]
		case hclsyntax.TokenComma, hclsyntax.TokenColon, hclsyntax.TokenEqual, hclsyntax.TokenFatArrow:
			level -= ops
			ops = 0
		case hclsyntax.TokenNewline:
			if len(stack) == 0 {
				level -= ops
				ops = 0
			}
		case hclsyntax.TokenComment, hclsyntax.TokenQuotedLit, hclsyntax.TokenStringLit, hclsyntax.TokenNumberLit,
			hclsyntax.TokenIdent, hclsyntax.TokenEOF, hclsyntax.TokenQuotedNewline, hclsyntax.TokenTabs:
		default: // an operator, a dot, a question mark: one more level of the expression
			ops++
			level++
		}
		if level > MaxNesting {
			return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Expression nested too deep",
				Detail:  fmt.Sprintf("The configuration nests more than %d levels deep here (brackets, templates, or a chain of operators, calls or indexes). Split it with locals.", MaxNesting),
				Subject: t.Range.Ptr()}}
		}
	}
	return nil
}

// checkNestingHCL checks a native-syntax file, whether or not it has lexical errors (which the
// parser reports with their places): the parser recurses as deep on a file that has some.
func checkNestingHCL(src []byte, filename string) hcl.Diagnostics {
	tokens, _ := hclsyntax.LexConfig(src, filename, hcl.Pos{Line: 1, Column: 1, Byte: 0})
	return checkNesting(tokens)
}

// checkNestingJSON checks a JSON-syntax file: its own nesting, and every string, which HCL
// reads as a template.
func checkNestingJSON(src []byte, filename string) hcl.Diagnostics {
	dec := json.NewDecoder(bytes.NewReader(src))
	depth := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			// Malformed JSON, which the parser reports with its place; it may parse on past
			// the error, so the brackets are counted without the decoder.
			return checkBracketsJSON(src, filename)
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
			if depth > MaxNesting {
				pos := posAt(src, int(dec.InputOffset()))
				return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "JSON nested too deep",
					Detail:  fmt.Sprintf("The configuration nests more than %d levels deep here.", MaxNesting),
					Subject: &hcl.Range{Filename: filename, Start: pos, End: pos}}}
			}
		case string:
			tokens, _ := hclsyntax.LexTemplate([]byte(v), filename, hcl.Pos{Line: 1, Column: 1})
			if d := checkNesting(tokens); d.HasErrors() {
				pos := posAt(src, int(dec.InputOffset()))
				d[0].Subject = &hcl.Range{Filename: filename, Start: pos, End: pos}
				d[0].Detail += " (in the string that ends here)"
				return d
			}
		}
	}
}

// checkBracketsJSON counts the brackets of malformed JSON outside its strings.
func checkBracketsJSON(src []byte, filename string) hcl.Diagnostics {
	depth, inString, escaped := 0, false, false
	for i, c := range src {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			depth++
			if depth > MaxNesting {
				pos := posAt(src, i)
				return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "JSON nested too deep",
					Detail:  fmt.Sprintf("The configuration nests more than %d levels deep here.", MaxNesting),
					Subject: &hcl.Range{Filename: filename, Start: pos, End: pos}}}
			}
		case c == ']' || c == '}':
			depth--
		}
	}
	return nil
}

// posAt is the line and column of a byte offset.
func posAt(src []byte, off int) hcl.Pos {
	if off > len(src) {
		off = len(src)
	}
	line := 1 + bytes.Count(src[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(src[:off], '\n')
	return hcl.Pos{Line: line, Column: col, Byte: off}
}

// evaluating is the expression being evaluated now, for the watch to name it when evaluation
// takes too much memory or time, unless it depends on a secret: then which expression was too
// large would tell something of the secret.
var evaluating atomic.Pointer[evalState]

type evalState struct {
	r      hcl.Range
	secret atomic.Bool // the expression depends on a secret (set early, or when it reads one)
}

func track(r hcl.Range, secret bool) *evalState {
	s := &evalState{r: r}
	s.secret.Store(secret)
	evaluating.Store(s)
	return s
}

// Evaluating returns the range of the expression being evaluated now: nil before the first,
// and while it is one that depends on a secret.
func Evaluating() *hcl.Range {
	s := evaluating.Load()
	if s == nil || s.secret.Load() {
		return nil
	}
	r := s.r
	return &r
}
