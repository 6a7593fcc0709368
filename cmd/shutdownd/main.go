// Command shutdownd brings an edge cloud site down in order when its power
// fails: OpenStack VMs, then the storage layer, then the physical hosts.
//
// Subcommands: serve, demo, token, check-config, migrate. Run
// `shutdownd help` for usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set by the Makefile from git.
var version = "dev"

const usage = `shutdownd — controlled emergency shutdown of an edge cloud site

Usage:
  shutdownd serve --config FILE            run the service
  shutdownd demo [--listen ADDR] [--database PATH]
                                           run the service against a built-in simulated site
  shutdownd check-config --config FILE     validate the configuration and print the plan
  shutdownd token create --name N --scopes read,simulate,shutdown [--allow-cidr CIDR]... [--expires 90d]
  shutdownd token list
  shutdownd token revoke NAME
  shutdownd migrate [up|status]
  shutdownd client simulate|shutdown|status|jobs|job ID|cancel ID [--url URL] [--token-file FILE] [--wait]
                                           talk to a running service
  shutdownd audit jobs|job ID|failures|verify [--format table|json|csv]
                                           post-incident reports, read-only (works while the service runs)
  shutdownd version

Every subcommand that touches the store takes --config FILE or --database PATH
(or SHUTDOWND_CONFIG / SHUTDOWND_DATABASE). Run 'shutdownd COMMAND -h' for the
flags and examples of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "shutdownd: %v\n\n%s", err, usage)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "shutdownd: %v\n", err)
		os.Exit(1)
	}
}

// usageError marks errors in how the command was called (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no subcommand given"}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, logger, stderr)
	case "demo":
		return cmdDemo(ctx, rest, logger, stdout, stderr)
	case "check-config":
		return cmdCheckConfig(rest, stdout, stderr)
	case "token":
		return cmdToken(ctx, rest, stdout, stderr)
	case "migrate":
		return cmdMigrate(ctx, rest, stdout, stderr)
	case "client":
		return cmdClient(ctx, rest, stdout, stderr)
	case "audit":
		return cmdAudit(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown subcommand %q", cmd)}
}

// newFlags returns a flag set whose errors are returned, not printed and
// exited on, so every bad argument gets one clear line.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package would print its error and the defaults itself; the
	// error comes back as a usageError instead, and -h prints the help of
	// the command with examples (help.go).
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpFor(fs)
		}
		return usageError{fmt.Sprintf("%s: %v", fs.Name(), err)}
	}
	return nil
}
