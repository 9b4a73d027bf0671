package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at release time with -ldflags "-X main.version=v1.2.3".
var version = ""

func versionString() string {
	v := version
	if v == "" {
		v = "(devel)"
		if info, ok := debug.ReadBuildInfo(); ok {
			if info.Main.Version != "" {
				v = info.Main.Version
			}
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					v += " " + s.Value[:12]
				}
			}
		}
	}
	return v
}

// versionLine is what version and --version print.
func versionLine() string {
	return fmt.Sprintf("deployer %s %s/%s %s", versionString(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func newVersion(g *globals) *cobra.Command {
	return exitCodes(&cobra.Command{
		Use:   "version",
		Short: "Print the deployer's version",
		Long:  "Print the deployer's version, the OS and architecture it was built for, and the Go version.",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(g.stdout, versionLine())
			return nil
		},
	}, "0 success")
}
