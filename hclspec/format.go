package hclspec

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

// FormatFiles lists the native-syntax files that fmt works on: the arguments, or for a directory
// its configuration and variable files. JSON files are left alone.
func FormatFiles(args []string) ([]string, error) {
	if len(args) == 0 {
		args = []string{"."}
	}
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, nameErr(a, err)
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		files, vars, err := configFiles(a)
		if err != nil {
			return nil, nameErr(a, err)
		}
		more, _ := filepath.Glob(filepath.Join(a, "*.vars.hcl"))
		for _, f := range append(append(files, vars...), more...) {
			if filepath.Ext(f) == ".hcl" && !contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// ReadSource reads a file fmt works on as Load reads a configuration's files: through its
// directory, so that a *.hcl linked to /etc/passwd or a fifo in a pull request's checkout is
// refused rather than printed (fmt -check shows a file's syntax errors with its lines) or
// waited on; at most MaxFileSize.
func ReadSource(path string) ([]byte, error) {
	c, err := openConfined(filepath.Dir(path))
	if err != nil {
		return nil, nameErr(path, err)
	}
	defer c.close()
	b, err := c.readRel(path, filepath.Base(path), MaxFileSize)
	return b, nameErr(path, err)
}

// nameErr names the file of an error by its display name, unless the error does already
// (pathError quotes it).
func nameErr(path string, err error) error {
	if _, ok := err.(*pathError); err == nil || ok {
		return err
	}
	return fmt.Errorf("%s: %v", displayName(path), unwrapPathErr(err))
}

// WriteSource rewrites a file that ReadSource read, through its directory: a link swapped in
// since, to a file outside, is refused rather than followed.
func WriteSource(path string, src []byte) error {
	c, err := openConfined(filepath.Dir(path))
	if err != nil {
		return nameErr(path, err)
	}
	defer c.close()
	f, err := c.root.OpenFile(filepath.Base(path), os.O_WRONLY|os.O_TRUNC|openNonblock, 0)
	if err != nil {
		return c.why(path, filepath.Base(path), err)
	}
	if _, err := f.Write(src); err != nil {
		f.Close()
		return nameErr(path, err)
	}
	return nameErr(path, f.Close())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Format returns src in canonical style. A file that does not parse is not rewritten: its syntax
// errors come back instead, since formatting broken input would guess at what was meant. A file
// nested deeper than MaxNesting is refused before it is parsed, as Load refuses it (the parser
// recurses as deep as it nests). Its diagnostics name the file by its display name.
func Format(src []byte, filename string) ([]byte, hcl.Diagnostics) {
	filename = displayName(filename)
	if d := checkNestingHCL(src, filename); d.HasErrors() {
		return nil, d
	}
	_, diags := hclsyntax.ParseConfig(src, filename, hcl.Pos{Line: 1, Column: 1})
	if diags.HasErrors() {
		return nil, diags
	}
	return hclwrite.Format(src), nil
}

// NewSourceResult returns a Result that can render diagnostics of files parsed outside Load
// (by Format), keyed by their paths.
func NewSourceResult(files map[string][]byte) *Result {
	r := &Result{files: map[string]*hcl.File{}}
	for name, src := range files {
		r.files[displayName(name)] = &hcl.File{Bytes: src}
	}
	return r
}

// DisplayName is how the deployer shows a file's name: as it is, or escaped as in a Go string
// when it holds anything a terminal or a CI log would act on (escape sequences, a new line that
// would start a workflow command, invalid UTF-8).
func DisplayName(path string) string { return displayName(path) }

// Changed reports whether formatting changes src.
func Changed(src, formatted []byte) bool { return !bytes.Equal(src, formatted) }
