package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// helpError carries the help text of a command asked for with -h/--help;
// run prints it to standard output and succeeds (exit 0), so
// `shutdownd client -h | less` works.
type helpError struct{ text string }

func (e helpError) Error() string { return "help requested" }

// run runs one command line. Help requests, at any level, print to stdout
// and return nil.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[0] == "help" {
		// "shutdownd help client simulate" is "shutdownd client simulate -h".
		args = append(args[1:len(args):len(args)], "-h")
	}
	if text, ok := groupHelp(args); ok {
		fmt.Fprint(stdout, text)
		return nil
	}
	err := dispatch(ctx, args, stdout, stderr)
	var h helpError
	if errors.As(err, &h) {
		fmt.Fprint(stdout, h.text)
		return nil
	}
	return err
}

func isHelpArg(s string) bool {
	return s == "-h" || s == "-help" || s == "--help" || s == "help"
}

// groupHelp answers -h given to a command that takes an action first
// (token, client), before any flag set exists.
func groupHelp(args []string) (string, bool) {
	if len(args) == 2 && isHelpArg(args[1]) && (args[0] == "token" || args[0] == "client" || args[0] == "audit") {
		return commandHelp[args[0]], true
	}
	return "", false
}

// helpFor builds the help of a flag set: what the command does, its
// examples, then every flag with its default.
func helpFor(fs *flag.FlagSet) error {
	var b bytes.Buffer
	text, ok := commandHelp[fs.Name()]
	if !ok {
		text = fmt.Sprintf("Usage: shutdownd %s [flags]\n", fs.Name())
	}
	b.WriteString(text)
	b.WriteString("\nFlags:\n")
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	return helpError{text: b.String()}
}

const clientCommon = `
The token is read from --token-file FILE (env SHUTDOWND_TOKEN_FILE) or, when
no file is given, from the environment variable SHUTDOWND_TOKEN. It is never
accepted as a flag: flags are visible to every user in the process list.
--url defaults to SHUTDOWND_URL, else http://127.0.0.1:8080.

With --wait the client follows the job's event stream: on a terminal one
status line updates in place with events printed above it, otherwise every
change is a plain line. Exit status: 0 when the job succeeded, 1 when it
failed or was cancelled (or the service could not be reached), 2 for a
usage error.
`

// commandHelp is the help of each command, by flag set name.
var commandHelp = map[string]string{
	"serve": `Usage: shutdownd serve --config FILE [--listen ADDR]

Run the service: the HTTP API, the history pages and the job runner.
SHUTDOWND_CONFIG stands in for --config; SHUTDOWND_LISTEN (or --listen)
overrides the listen address of the configuration file.

Examples:
  shutdownd serve --config /etc/shutdownd/shutdownd.yaml
  SHUTDOWND_CONFIG=/etc/shutdownd/shutdownd.yaml SHUTDOWND_LISTEN=127.0.0.1:9000 shutdownd serve
`,
	"check-config": `Usage: shutdownd check-config --config FILE

Validate the configuration and print what a shutdown would do: hosts in
order, BMC protocols, storage commands. Every error is printed with its line.

Examples:
  shutdownd check-config --config /etc/shutdownd/shutdownd.yaml
  OS_CLOUD=edge shutdownd check-config --config ./shutdownd.yaml
`,
	"demo": `Usage: shutdownd demo [--listen ADDR] [--database PATH]

Start a simulated site on 127.0.0.1 (OpenStack, SSH hosts, Redfish BMCs that
only pretend) and the service against it, and print a token with every
scope. Nothing real is ever powered off.

Examples:
  shutdownd demo
  shutdownd demo --listen 127.0.0.1:9000 --database ./demo.db
`,
	"token": `Usage: shutdownd token create|list|revoke [flags]

Manage API tokens. Only a SHA-256 hash of each token is stored; create
prints the token once, alone on standard output.

Examples:
  shutdownd token create --config /etc/shutdownd/shutdownd.yaml --name ups-controller \
      --scopes read,shutdown --allow-cidr 10.0.9.0/24 --expires 365d > /etc/ups/shutdownd-token
  shutdownd token list --config /etc/shutdownd/shutdownd.yaml
  shutdownd token revoke --config /etc/shutdownd/shutdownd.yaml ups-controller

Run 'shutdownd token create -h' (list, revoke) for the flags of each.
`,
	"token create": `Usage: shutdownd token create --name NAME --scopes SCOPES [--allow-cidr CIDR]... [--expires DURATION]

Create a token and print it once on standard output (the rest goes to
standard error, so it can be redirected into a file). Scopes: read,
simulate, shutdown.

Examples:
  shutdownd token create --config /etc/shutdownd/shutdownd.yaml --name ups --scopes read,shutdown
  SHUTDOWND_DATABASE=/var/lib/shutdownd/shutdownd.db shutdownd token create --name grafana --scopes read --expires 90d
`,
	"token list": `Usage: shutdownd token list

List every token: name, scopes, networks, creation, expiry and status.

Examples:
  shutdownd token list --config /etc/shutdownd/shutdownd.yaml
`,
	"token revoke": `Usage: shutdownd token revoke NAME

Revoke a token at once; it is kept (revoked) for the audit trail.

Examples:
  shutdownd token revoke --config /etc/shutdownd/shutdownd.yaml ups-controller
`,
	"migrate": `Usage: shutdownd migrate [up|status]

Apply pending database migrations (up, the default) or show them (status).
serve also migrates at start; this is for checking before an upgrade.

Examples:
  shutdownd migrate status --config /etc/shutdownd/shutdownd.yaml
  shutdownd migrate up --database /var/lib/shutdownd/shutdownd.db
`,
	"audit": `Usage: shutdownd audit jobs|job ID|failures|verify|power [flags]

Post-incident reports over the store. The database is opened read-only and
never migrated: an audit never changes the record and works while the
service runs. Reports:
  jobs                 jobs newest first: kind, state, trigger, reason, counts
  job ID               one job's timeline: steps, every target action, events
  failures             every failed target action, with its error
  verify               check each job's event hash chain (tampering shows)
  power                power events newest first: mains lost and back, NUT
                       server lost and back, jobs the power source started

Examples:
  shutdownd audit jobs --config /etc/shutdownd/shutdownd.yaml --kind shutdown
  shutdownd audit job 42 --database /var/lib/shutdownd/shutdownd.db --format csv > job42.csv
  shutdownd audit failures --format json | jq .
  shutdownd audit verify --config /etc/shutdownd/shutdownd.yaml

Run 'shutdownd audit REPORT -h' for the flags of a report.
`,
	"audit jobs": `Usage: shutdownd audit jobs [--kind K] [--state S] [--limit N] [--before ID] [--format table|json|csv]

Jobs newest first: kind, state, who triggered it and from where, reason,
start, duration, targets done and failed. Read-only.

Examples:
  shutdownd audit jobs --config /etc/shutdownd/shutdownd.yaml --kind shutdown --limit 10
`,
	"audit job": `Usage: shutdownd audit job ID [--format table|json|csv]

One job's timeline: its steps with durations, every target action (VM,
storage command, host, BMC operation) with state, attempts, timings and
error, and the event log. Read-only.

Examples:
  shutdownd audit job 42 --config /etc/shutdownd/shutdownd.yaml
  shutdownd audit job 42 --format json > job42.json
`,
	"audit failures": `Usage: shutdownd audit failures [--kind K] [--limit N] [--format table|json|csv]

Every failed target action of the selected jobs, with its error. Read-only.

Examples:
  shutdownd audit failures --config /etc/shutdownd/shutdownd.yaml --kind shutdown
`,
	"audit verify": `Usage: shutdownd audit verify [--format table|json|csv]

Recompute every job's event hash chain and report any job whose events were
changed, removed or reordered after the fact. Exit status 1 when a chain is
broken. Read-only.

Examples:
  shutdownd audit verify --database /var/lib/shutdownd/shutdownd.db
`,
	"audit power": `Usage: shutdownd audit power [--limit N] [--format table|json|csv]

The power source watcher's events, newest first: the mains lost and back,
the NUT server lost and back, and the jobs it started, each with the UPS
reading (status, charge, runtime) that went with it. Read-only.

Examples:
  shutdownd audit power --config /etc/shutdownd/shutdownd.yaml --limit 20
`,
	"client": `Usage: shutdownd client ACTION [flags]

Talk to a running shutdownd over its HTTP API. Actions:
  simulate [--reason R] [--wait]      start a simulation (checks everything, stops nothing)
  shutdown [--reason R] [--wait]      start the shutdown of the site
  startup [--shutdown-job N] [--wait] bring the site back after a shutdown
  status                              latest simulation, shutdown and startup
  jobs [--kind K] [--limit N]         recent jobs
  job ID [--wait]                     one job: steps, failed actions, events
  cancel ID [--wait]                  cancel a job at its next safe point
` + clientCommon + `
Examples:
  export SHUTDOWND_URL=https://mgmt-01:8443 SHUTDOWND_TOKEN_FILE=~/.config/shutdownd/token
  shutdownd client simulate --wait
  shutdownd client shutdown --reason "utility power lost" --expected-recovery 2025-06-24T12:00:00Z --wait
  shutdownd client jobs --kind shutdown
  shutdownd client job 42 --json | jq .actions

Run 'shutdownd client ACTION -h' for the flags of an action.
`,
	"client simulate": `Usage: shutdownd client simulate [--reason R] [--expected-recovery T] [--wait]

Start a simulation: every check of a shutdown, nothing stopped.
` + clientCommon + `
Examples:
  SHUTDOWND_TOKEN_FILE=/etc/shutdownd/monitor-token shutdownd client simulate --wait
  shutdownd client simulate --url http://127.0.0.1:8080 --token-file ./token --reason "weekly check" --wait
`,
	"client shutdown": `Usage: shutdownd client shutdown [--reason R] [--expected-recovery T] [--wait]

Start the shutdown of the site (or point at the one already running).
` + clientCommon + `
Examples:
  shutdownd client shutdown --token-file /etc/ups/shutdownd-token --reason "on battery, 5 min left" --wait
`,
	"client startup": `Usage: shutdownd client startup [--shutdown-job N] [--reason R] [--wait]

Bring the site back after a shutdown: hosts powered on in the reverse of the
shutdown order, storage started, and exactly the VMs that shutdown stopped
started again. Restores the latest shutdown unless --shutdown-job names one.
Needs a token with the startup scope.
` + clientCommon + `
Examples:
  shutdownd client startup --token-file /etc/shutdownd/ops-token --reason "mains back" --wait
  shutdownd client startup --shutdown-job 42 --wait
`,
	"client status": `Usage: shutdownd client status

Show the latest simulation, the latest shutdown and the latest startup.
` + clientCommon + `
Examples:
  shutdownd client status --token-file ./token
  shutdownd client status --json
`,
	"client jobs": `Usage: shutdownd client jobs [--kind simulation|shutdown] [--limit N]

List recent jobs, newest first.
` + clientCommon + `
Examples:
  shutdownd client jobs --kind shutdown --limit 5
`,
	"client job": `Usage: shutdownd client job ID [--wait] [--json]

Show one job: its steps, a count of its actions, every failed action and the
event log. With --wait, follow it until it ends.
` + clientCommon + `
Examples:
  shutdownd client job 42
  shutdownd client job 42 --wait
`,
	"client cancel": `Usage: shutdownd client cancel ID [--wait]

Cancel a job: it stops at its next safe point; finished actions stay done.
Needs the scope of the job's kind (simulate or shutdown).
` + clientCommon + `
Examples:
  shutdownd client cancel 42 --wait
`,
}
