package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/deployer-dev/deployer/executor/docker"
	"github.com/deployer-dev/deployer/executor/docker/dockertest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"deployer": func() { os.Exit(main1()) },
	})
}

// TestScripts runs testdata/script/*.txtar: each runs the real deployer binary and checks its
// output, exit code and files. Scripts that need the engine say [docker]; when CI is set and no
// engine answers, they fail instead of being skipped. A script's projects are named ts-$RUN...;
// what they leave on the engine is removed when the script ends. Those that deploy skip with
// -short; they deploy the test app ($APP_IMAGE).
//
// Commands beside testscript's own:
//
//	example NAME        copy examples/NAME to $WORK/NAME under project ts-$RUN-NAME and free
//	                    ports (the example itself may be deployed on this engine)
//	freeport VAR        set VAR to a TCP port nothing listens on
//	hold-port VAR       a process outside Docker (this test) listens on a free loopback port,
//	                    named in $VAR, until the script ends
//	expand FILE...      replace $VAR and ${VAR} in the files with the script's variables
//	engine-objects P    what the engine holds of project P, one a line
func TestScripts(t *testing.T) {
	examples, _ := filepath.Abs(examplesDir)
	eng, engErr := docker.New("")
	if engErr == nil {
		defer eng.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		engErr = eng.Ping(ctx)
		cancel()
	}
	image := ""
	if engErr == nil && !testing.Short() {
		image = dockertest.AppImage(t, eng)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			b := make([]byte, 4)
			rand.Read(b)
			run := hex.EncodeToString(b)
			env.Setenv("RUN", run)
			env.Setenv("EXAMPLES", examples)
			env.Setenv("APP_IMAGE", image)
			if h := os.Getenv("DOCKER_HOST"); h != "" {
				env.Setenv("DOCKER_HOST", h)
			}
			env.Defer(func() { removeScriptProjects("ts-" + run) })
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"example": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: example NAME")
				}
				project := "ts-" + ts.Getenv("RUN") + "-" + args[0]
				ts.Defer(func() { removeScriptProjects(project) })
				if _, err := copyExampleTo(args[0], ts.Getenv("WORK"), project); err != nil {
					ts.Fatalf("%v", err)
				}
			},
			"freeport": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: freeport VAR")
				}
				port, err := dockertest.PickPort()
				ts.Check(err)
				ts.Setenv(args[0], strconv.Itoa(port))
			},
			"hold-port": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: hold-port VAR")
				}
				l, err := net.Listen("tcp", "127.0.0.1:0")
				ts.Check(err)
				ts.Defer(func() { l.Close() })
				ts.Setenv(args[0], strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
			},
			// (a volume's name is a block label, which no variable can set)
			"expand": func(ts *testscript.TestScript, neg bool, args []string) {
				for _, f := range args {
					expanded := os.Expand(ts.ReadFile(f), ts.Getenv)
					ts.Check(os.WriteFile(ts.MkAbs(f), []byte(expanded), 0o644))
				}
			},
			// "container NAME", "network NAME", "volume NAME" (volumes named after it)
			"engine-objects": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 || engErr != nil {
					ts.Fatalf("usage: engine-objects PROJECT (with an engine)")
				}
				w := ts.Stdout() // even when it says nothing: stdout is then empty
				for _, o := range dockertest.Objects(eng, args[0]) {
					fmt.Fprintln(w, o)
				}
			},
		},
		Condition: func(cond string) (bool, error) {
			if cond != "docker" {
				return false, nil
			}
			if engErr != nil && os.Getenv("CI") != "" {
				t.Fatalf("CI is set but no Docker engine answers: %v", engErr)
			}
			return engErr == nil, nil
		},
	})
}

// removeScriptProjects removes what a script's projects left on the engine: the containers,
// network, volumes and images of the projects named with the prefix.
func removeScriptProjects(prefix string) {
	eng, err := docker.New("")
	if err != nil {
		return
	}
	defer eng.Close()
	if eng.Ping(context.Background()) == nil {
		dockertest.RemoveProject(eng, prefix)
	}
}

// Every flag that takes a value names it in its help as the user types it (FILE, NAME=VALUE,
// service.NAME), not by its Go type, and not with text that was meant as a quote.
func TestFlagHelpNamesArguments(t *testing.T) {
	root, _ := newRoot(nil, io.Discard, io.Discard)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() == "bool" {
				return
			}
			name, _ := pflag.UnquoteUsage(f)
			if name == "" || strings.Contains(name, " ") || strings.ContainsAny(name[:1], "abcdefghijklmnopqrstuvwxyz") && !strings.HasPrefix(name, "service.") {
				t.Errorf("%s --%s names its argument %q", c.CommandPath(), f.Name, name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
