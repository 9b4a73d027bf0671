// Package hclspec reads a deployer configuration written in HCL (native or JSON syntax) into
// config.Project: files, variables, locals, functions, references, and diagnostics that point at
// the source. It knows HCL and nothing of Docker or S3. Inputs from outside the files (variable
// values, the environment) are passed in, so loading is a pure function of its Options.
package hclspec

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/deployer-dev/deployer/config"
)

// VarArg is one -var or -var-file from the command line, kept in command-line order because later
// ones win.
type VarArg struct {
	File  string // -var-file FILE, or
	Name  string // -var NAME=VALUE
	Value string
	JSON  bool // Value is JSON (a saved plan's value), not command-line text
}

// Options are everything loading depends on.
type Options struct {
	Dir   string   // the configuration directory
	Files []string // -f: exactly these files instead of the directory's *.hcl
	Vars  []VarArg
	// Env is the process environment as KEY=VALUE (os.Environ()); it feeds DEPLOYER_VAR_* and
	// env(), whose values are all sensitive.
	Env []string
	// Unknown is for validate: a required variable without a value is an unknown value of its
	// type instead of an error, so that types and references are checked without the values
	// (CI validates a pull request without its secrets). Whatever depends on it is unknown:
	// validation rules and semantic checks that need it are skipped. Plan and apply need values.
	// The environment is not read at all: DEPLOYER_VAR_* set nothing, env() is unknown.
	Unknown bool
}

// Result is a loaded configuration with what the CLI needs to render errors and save plans.
type Result struct {
	Project   *config.Project
	Variables []*VarValue
	// Unknown names the variables that had no value (Options.Unknown), as var.NAME.
	Unknown []string
	files   map[string]*hcl.File
	hidden  map[string]bool // files whose lines are not shown: they hold sensitive values
}

// VarValue is a resolved variable. Value is its JSON rendering; for sensitive variables callers
// must use Hash instead.
type VarValue struct {
	Name      string
	Sensitive bool
	Source    string
	Value     string
}

// afterParse is called once the files are parsed: tests make it panic, standing for a defect
// anywhere in loading.
var afterParse = func() {}

// Load reads, evaluates, defaults and validates a configuration. The Result is non-nil even when
// there are errors, so that the diagnostics can be rendered with their source lines. Whatever
// the input, it returns: a panic anywhere in loading becomes an error.
func Load(opts Options) (res *Result, diags hcl.Diagnostics) {
	l := &loader{
		opts:   opts,
		parser: hclparse.NewParser(),
	}
	if !opts.Unknown { // validate reads nothing from the environment
		l.env = envMap(opts.Env)
	}
	res = &Result{}
	defer func() {
		if r := recover(); r != nil {
			l.fs.close()
			// Nothing of what was being loaded is shown: it may hold a secret.
			res, diags = &Result{}, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Internal error while loading the configuration",
				Detail: "The deployer failed while reading the configuration (a defect of the deployer: please report it, with the configuration if you can share it). Nothing was changed."}}
		}
	}()
	project, diags := l.load()
	l.fs.close()
	res.files, res.hidden = l.parser.Files(), l.hidden
	if l.credential != nil {
		return res, l.credential
	}
	if diags = l.sanitize(diags, project); project == nil || diags.HasErrors() {
		return res, diags
	}
	config.Defaults(project)
	for _, e := range config.Validate(project) {
		if within(hclRange(e.Range), l.secretRanges) {
			// About a value computed from a secret: whether, where and why it is invalid
			// would tell something of the secret.
			l.failSecret()
			continue
		}
		d := &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  e.Summary,
			Detail:   e.Detail,
			Subject:  hclRange(e.Range).Ptr(),
		}
		if e.Safe {
			d.Extra = safeDetail{}
		}
		diags = append(diags, d)
	}
	diags = l.sanitize(diags, project)
	res.Project = project
	for _, v := range l.vars {
		if v.unknown {
			res.Unknown = append(res.Unknown, "var."+v.name)
		}
	}
	for _, v := range l.vars {
		vv := &VarValue{Name: v.name, Sensitive: v.sensitive, Source: v.source}
		if b, err := ctyJSON(v.value); err == nil {
			vv.Value = b
		}
		res.Variables = append(res.Variables, vv)
	}
	return res, diags
}

type loader struct {
	opts   Options
	parser *hclparse.Parser
	env    map[string]string
	dir    string
	fs     *confined // the directory, through which its files are read
	funcs  map[string]function.Function

	// secrets are the secrets read while loading (env() values, credential files), masked in
	// diagnostics with the sensitive variables' values; sensitiveRanges and unknownRanges are the
	// expressions whose values are sensitive or unknown: errors about them do not quote them, or
	// are not errors; secretRanges are those whose values hold a known secret: an error about
	// them depends on it.
	secrets         []string
	sensitiveRanges []hcl.Range
	secretRanges    []hcl.Range
	unknownRanges   []hcl.Range
	hidden          map[string]bool

	touched      bool              // the expression being evaluated read a secret (env(), a credential file)
	current      *evalState        // the expression being evaluated
	secretFailed bool              // something that depends on a secret's value failed (failSecret)
	fileReads    []fileRead        // what file() read
	tlsPaths     map[string]string // the engines' TLS files written as constants: what names them
	// credential is the error of a file() that read TLS material: loading reports only it.
	credential hcl.Diagnostics

	bodies   []hcl.Body
	vars     []*variable
	varByKey map[string]*variable
	locals   map[string]cty.Value
	stores   map[string]*config.Store
	engines  map[string]*config.Engine
	ctx      *hcl.EvalContext
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// configFiles lists the configuration files of a directory: *.hcl and *.hcl.json, sorted,
// without dotfiles, editor backups and variable files (*.vars.hcl).
func configFiles(dir string) ([]string, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var files, autoVars []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasSuffix(name, "~") {
			continue
		}
		switch {
		case strings.HasSuffix(name, ".auto.vars.hcl"), strings.HasSuffix(name, ".auto.vars.hcl.json"):
			autoVars = append(autoVars, filepath.Join(dir, name))
		case strings.HasSuffix(name, ".vars.hcl"), strings.HasSuffix(name, ".vars.hcl.json"):
			// loaded only when named with -var-file
		case strings.HasSuffix(name, ".hcl"), strings.HasSuffix(name, ".hcl.json"):
			files = append(files, filepath.Join(dir, name))
		}
	}
	sort.Strings(files)
	sort.Strings(autoVars)
	return files, autoVars, nil
}

// parse reads one file in the syntax its name says: a regular file of at most MaxFileSize,
// nested no deeper than MaxNesting.
// Files are known by their display name (displayName), in ranges and so in every message.
func (l *loader) parse(path string) (*hcl.File, hcl.Diagnostics) {
	src, err := l.readFile(path)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read configuration file",
			Detail:   fmt.Sprintf("%v. Configuration and variables files are regular files inside the configuration's directory (or named on the command line).", err),
		}}
	}
	name := displayName(path)
	if strings.HasSuffix(path, ".json") {
		if d := checkNestingJSON(src, name); d.HasErrors() {
			return nil, d
		}
		return l.parser.ParseJSON(src, name)
	}
	if d := checkNestingHCL(src, name); d.HasErrors() {
		l.parser.AddFile(name, &hcl.File{Bytes: src})
		return nil, d
	}
	return l.parser.ParseHCL(src, name)
}

// displayName is how a file's name is shown: as it is, or, when it holds anything a terminal
// or a CI log would act on (an escape sequence, a new line that starts a workflow command,
// invalid UTF-8), escaped as in a Go string, which no other name is shown as.
func displayName(path string) string {
	q := strconv.Quote(path)
	if q[1:len(q)-1] == path {
		return path
	}
	return q[1 : len(q)-1]
}

// readFile reads a configuration or variables file: through the directory when it is in it.
func (l *loader) readFile(path string) ([]byte, error) {
	rel, in, err := l.fs.named(path)
	if err != nil {
		return nil, err
	}
	if in {
		return l.fs.readRel(path, rel, MaxFileSize)
	}
	b, err := readBounded(path, MaxFileSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", displayName(path), unwrapPathErr(err))
	}
	return b, nil
}

// readBounded reads a regular file of at most max bytes: not a device, a pipe or a directory,
// and never more than max bytes of it.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s, not a regular file", kind(st.Mode()))
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d MiB", max>>20)
	}
	return b, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (l *loader) load() (*config.Project, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	dir := l.opts.Dir
	if dir == "" {
		dir = "."
	}
	l.dir = dir
	var files, autoVars []string
	if len(l.opts.Files) > 0 {
		files = l.opts.Files
		l.dir = filepath.Dir(files[0])
		if l.opts.Dir != "" {
			l.dir = l.opts.Dir
		}
	} else {
		st, err := os.Stat(dir)
		switch {
		case err != nil:
			return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read configuration directory",
				Detail: fmt.Sprintf("%s: %s. Run the command in the service's directory or pass the directory as an argument.", dir, unwrapPathErr(err))}}
		case !st.IsDir():
			files = []string{dir}
			l.dir = filepath.Dir(dir)
		default:
			files, autoVars, err = configFiles(dir)
			if err != nil {
				return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read configuration directory",
					Detail: fmt.Sprintf("%s: %s.", dir, unwrapPathErr(err))}}
			}
		}
	}
	if len(files) == 0 {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "No configuration files",
			Detail: fmt.Sprintf("%s holds no *.hcl or *.hcl.json file. Create one (see examples/quickstart) or pass the directory that holds it.", dir)}}
	}
	fs, err := openConfined(l.dir)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read configuration directory",
			Detail: fmt.Sprintf("%s: %s.", l.dir, unwrapPathErr(err))}}
	}
	l.fs = fs
	for _, f := range files {
		file, d := l.parse(f)
		diags = append(diags, d...)
		if file != nil {
			l.bodies = append(l.bodies, file.Body)
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	afterParse()

	top, d := l.topLevel()
	diags = append(diags, d...)
	if d.HasErrors() {
		return nil, diags
	}

	l.tlsPaths = l.staticTLSPaths(top.engines)
	diags = append(diags, l.declareVariables(top.variables)...)
	diags = append(diags, l.assignVariables(autoVars)...)
	diags = append(diags, l.checkShortSecrets()...)
	if diags.HasErrors() {
		return nil, diags
	}
	diags = append(diags, l.validateVariables()...)
	diags = append(diags, l.evalLocals(top.locals)...)
	if diags.HasErrors() {
		return nil, diags
	}

	p := &config.Project{Dir: l.dir, Files: files, Sensitive: map[string]bool{}, Unknown: map[string]bool{}}
	l.ctx = l.evalContext(true)
	d = l.decodeProject(p, top)
	diags = append(diags, d...)
	if !d.HasErrors() {
		diags = append(diags, l.checkPaths(p)...)
	}
	if d := l.checkCredentialReads(p); d.HasErrors() {
		l.credential = d
		return nil, d
	}
	for _, v := range l.vars {
		p.Variables = append(p.Variables, &config.Variable{Name: v.name, Description: v.description, Sensitive: v.sensitive, Source: v.source})
		if v.sensitive {
			p.Secrets = appendSecrets(p.Secrets, v.value, true)
		}
	}
	p.Secrets = append(p.Secrets, l.secrets...)
	return p, diags
}

// evalContext is what expressions may refer to: var.*, local.*, backup_store.* and the functions.
func (l *loader) evalContext(withStores bool) *hcl.EvalContext {
	vars := map[string]cty.Value{}
	for _, v := range l.vars {
		vars[v.name] = v.value
	}
	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":   cty.ObjectVal(vars),
			"local": cty.ObjectVal(l.locals),
		},
		Functions: l.functions(),
	}
	if withStores {
		stores := map[string]cty.Value{}
		for name, st := range l.stores {
			stores[name] = storeValue(st)
		}
		ctx.Variables["backup_store"] = cty.ObjectVal(stores)
		engines := map[string]cty.Value{config.DefaultEngine: cty.StringVal(config.DefaultEngine)}
		for name := range l.engines {
			engines[name] = cty.StringVal(name) // engine.NAME is the engine's name
		}
		ctx.Variables["engine"] = cty.ObjectVal(engines)
	}
	return ctx
}

func storeValue(st *config.Store) cty.Value {
	return cty.ObjectVal(map[string]cty.Value{
		"name":      cty.StringVal(st.Name),
		"kind":      cty.StringVal(string(st.Kind)),
		"bucket":    cty.StringVal(st.Bucket),
		"prefix":    cty.StringVal(st.Prefix),
		"region":    cty.StringVal(st.Region),
		"endpoint":  cty.StringVal(st.Endpoint),
		"directory": cty.StringVal(st.Directory),
	})
}

func hclRange(r config.Range) hcl.Range {
	return hcl.Range{
		Filename: r.Filename,
		Start:    hcl.Pos{Line: r.Start.Line, Column: r.Start.Column, Byte: r.Start.Byte},
		End:      hcl.Pos{Line: r.End.Line, Column: r.End.Column, Byte: r.End.Byte},
	}
}

func cfgRange(r hcl.Range) config.Range {
	return config.Range{
		Filename: r.Filename,
		Start:    config.Pos{Line: r.Start.Line, Column: r.Start.Column, Byte: r.Start.Byte},
		End:      config.Pos{Line: r.End.Line, Column: r.End.Column, Byte: r.End.Byte},
	}
}

func ctyJSON(v cty.Value) (string, error) {
	v, _ = v.UnmarkDeep()
	b, err := ctyjson.Marshal(v, v.Type())
	return string(b), err
}
