package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/deployer-dev/deployer/executor/proxy"
)

// newProxy is what runs inside the proxy container (built FROM scratch from this binary).
func newProxy(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "proxy", Short: "The zero-downtime proxy (runs in its own container)", Args: cobra.ArbitraryArgs, RunE: groupRun,
		Long: "The zero-downtime proxy: the deployer runs `deployer proxy serve` in the project's proxy container."}
	var socket string
	var grace time.Duration
	var state, handover string
	var reusePort bool
	serve := &cobra.Command{
		Use:   "serve [-socket PATH] [-state FILE] [-grace DURATION]",
		Short: "Run the proxy; the deployer configures it through its control socket",
		Long: `Run the zero-downtime proxy: it listens on the host ports of the routes the deployer sets
through its control socket, and forwards to the live releases. The deployer runs it in the
project's proxy container; it is not meant to be started by hand. It stops on SIGTERM, letting
requests in flight finish for up to -grace.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(g.stdout, "deployer proxy %s: control on %s\n", versionString(), socket)
			srv := proxy.NewServer()
			srv.StateFile = state
			srv.Handover = handover
			srv.ReusePort = reusePort
			return srv.Serve(ctx, socket, grace)
		},
	}
	serve.Flags().StringVar(&socket, "socket", proxy.SocketPath, "the control socket `PATH`")
	serve.Flags().DurationVar(&grace, "grace", 30*time.Second, "how long (a `DURATION`) requests in flight may finish when the proxy stops")
	serve.Flags().StringVar(&state, "state", "/state/routes.json", "the `FILE` where the routes are kept across restarts (empty: nowhere)")
	serve.Flags().StringVar(&handover, "handover", "/state/handover.sock", "the `PATH` (a prefix) of the unix sockets through which an upgraded proxy takes over this one's listening sockets (empty: no handover)")
	serve.Flags().BoolVar(&reusePort, "reuse-port", false, "share a port with the proxy being replaced when it cannot hand its sockets over (SO_REUSEPORT)")
	ctl := &cobra.Command{
		Use:    "ctl JSON|-",
		Short:  "Send one control request to the proxy, or with - one per line of stdin (the deployer runs it with docker exec)",
		Args:   argsBetween(1, 1, "a control request (JSON) or -"),
		Hidden: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == proxy.SessionArg {
				return proxy.CtlSession(socket, g.stdin, g.stdout)
			}
			req, err := proxy.ParseRequest(args[0])
			if err != nil {
				return fmt.Errorf("control request: %w", err)
			}
			resp, err := proxy.Ctl(socket, req)
			if err != nil {
				return err
			}
			return json.NewEncoder(g.stdout).Encode(resp)
		},
	}
	ctl.Flags().StringVar(&socket, "socket", proxy.SocketPath, "the control socket `PATH`")
	cmd.AddCommand(serve, ctl)
	return cmd
}
