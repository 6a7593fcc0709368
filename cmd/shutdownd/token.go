package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// scopes a token may carry; the API checks them per endpoint.
var validScopes = map[string]bool{"read": true, "simulate": true, "shutdown": true, "startup": true}

// storeFlags adds --config and --database to fs and returns a function that
// opens the store they name.
func storeFlags(fs *flag.FlagSet) func(ctx context.Context) (*store.Store, error) {
	path := databaseFlags(fs)
	return func(ctx context.Context) (*store.Store, error) {
		p, err := path()
		if err != nil {
			return nil, err
		}
		return store.Open(ctx, p)
	}
}

// databaseFlags adds --config and --database to fs and returns a function
// that resolves the database path they name.
func databaseFlags(fs *flag.FlagSet) func() (string, error) {
	cfgPath := fs.String("config", "", "configuration file (its database is used; env SHUTDOWND_CONFIG)")
	dbPath := fs.String("database", "", "database file (env SHUTDOWND_DATABASE)")
	return func() (string, error) {
		// Flags win over the environment as a pair, so an explicit --config
		// is never overridden by a SHUTDOWND_DATABASE left in the shell.
		// From the environment, a configuration wins over a database: it
		// is what serve reads, and tokens must land where serve looks.
		if *dbPath == "" && *cfgPath == "" {
			*dbPath, *cfgPath = envStore()
			if *cfgPath != "" {
				*dbPath = ""
			}
		}
		path := *dbPath
		if path == "" && *cfgPath != "" {
			// Only its database: the rest (secrets from the service's
			// environment above all) is the service's to check.
			db, err := config.DatabaseOf(*cfgPath)
			if err != nil {
				return "", err
			}
			path = db
		}
		if path == "" {
			return "", usageError{fs.Name() + ": --config or --database is required (or SHUTDOWND_CONFIG / SHUTDOWND_DATABASE)"}
		}
		return path, nil
	}
}

// allowedNetwork reads an --allow-cidr value: a CIDR network, or a single
// address (its /32 or /128), as trusted_proxies accepts them; an IPv4
// address written IPv4-mapped is taken as the IPv4 it is.
func allowedNetwork(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid --allow-cidr %q: not an IP address or a CIDR network like 10.0.0.0/24", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid --allow-cidr %q: not a CIDR network like 10.0.0.0/24", s)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"token: expected create, list or revoke"}
	}
	switch args[0] {
	case "create":
		return tokenCreate(ctx, args[1:], stdout, stderr)
	case "list":
		return tokenList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return tokenRevoke(ctx, args[1:], stdout, stderr)
	}
	return usageError{fmt.Sprintf("token: unknown subcommand %q", args[0])}
}

// maxExpiryDays bounds --expires: ten years is longer than any token should
// live, and far inside what a time.Duration holds (a larger count of days
// overflowed into an expiry in the past).
const maxExpiryDays = 3650

// parseExpiry accepts Go durations and whole days ("90d"), up to ten years.
func parseExpiry(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("invalid --expires %q: want e.g. 90d or 12h", s)
		}
		if n > maxExpiryDays {
			return 0, fmt.Errorf("invalid --expires %q: at most %dd (ten years)", s, maxExpiryDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("invalid --expires %q: want e.g. 90d or 12h", s)
	}
	if v > maxExpiryDays*24*time.Hour {
		return 0, fmt.Errorf("invalid --expires %q: at most %dd (ten years)", s, maxExpiryDays)
	}
	return v, nil
}

func parseScopes(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !validScopes[p] {
			return nil, fmt.Errorf("invalid scope %q: want read, simulate or shutdown", p)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--scopes is required (read, simulate, shutdown, startup)")
	}
	return out, nil
}

func tokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token create", stderr)
	open := storeFlags(fs)
	name := fs.String("name", "", "token name (unique)")
	scopesFlag := fs.String("scopes", "", "comma-separated scopes: read, simulate, shutdown, startup")
	expires := fs.String("expires", "", "lifetime, e.g. 90d or 12h (default: never)")
	var cidrs stringList
	fs.Var(&cidrs, "allow-cidr", "source network allowed to use the token (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return usageError{"token create: --name is required"}
	}
	scopes, err := parseScopes(*scopesFlag)
	if err != nil {
		return usageError{"token create: " + err.Error()}
	}
	var prefixes []string
	for _, c := range cidrs {
		p, err := allowedNetwork(c)
		if err != nil {
			return usageError{"token create: " + err.Error()}
		}
		if p != p.Masked() {
			// Said on stderr, so a typo for a single host is noticed.
			fmt.Fprintf(stderr, "note: --allow-cidr %s has host bits set; allowing the network %s\n", c, p.Masked())
		}
		prefixes = append(prefixes, p.Masked().String())
	}
	var exp *time.Time
	if *expires != "" {
		d, err := parseExpiry(*expires)
		if err != nil {
			return usageError{"token create: " + err.Error()}
		}
		t := time.Now().UTC().Add(d)
		exp = &t
	}
	st, err := open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	secret, err := store.NewTokenSecret()
	if err != nil {
		return err
	}
	tok, err := st.CreateToken(ctx, *name, store.HashToken(secret), scopes, prefixes, exp)
	if err != nil {
		return fmt.Errorf("create token %s: %w", *name, err)
	}
	// The secret goes alone to standard output so scripts can capture it;
	// it is shown once and only its hash is stored.
	fmt.Fprintln(stdout, secret)
	fmt.Fprintf(stderr, "created token %q with scopes %s", tok.Name, strings.Join(scopes, ","))
	if len(prefixes) > 0 {
		fmt.Fprintf(stderr, ", networks %s", strings.Join(prefixes, ","))
	}
	if exp != nil {
		fmt.Fprintf(stderr, ", expires %s", exp.Format(time.RFC3339))
	}
	fmt.Fprintln(stderr, "; store it now: it cannot be shown again")
	return nil
}

func tokenList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token list", stderr)
	open := storeFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	st, err := open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	toks, err := st.ListTokens(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSCOPES\tNETWORKS\tCREATED\tEXPIRES\tSTATUS")
	now := time.Now()
	for _, t := range toks {
		status := "active"
		switch {
		case t.RevokedAt != nil:
			status = "revoked"
		case t.ExpiresAt != nil && now.After(*t.ExpiresAt):
			status = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, strings.Join(t.Scopes, ","), orDash(strings.Join(t.CIDRs, ",")),
			t.CreatedAt.UTC().Format(time.RFC3339), orDash(fmtTime(t.ExpiresAt)), status)
	}
	return tw.Flush()
}

func tokenRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token revoke", stderr)
	open := storeFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{"token revoke: expected exactly one token name"}
	}
	st, err := open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.RevokeToken(ctx, fs.Arg(0)); err != nil {
		return fmt.Errorf("revoke token %s: %w", fs.Arg(0), err)
	}
	fmt.Fprintf(stderr, "revoked token %q\n", fs.Arg(0))
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func cmdMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("migrate", stderr)
	dbPath := databaseFlags(fs)
	// Accept the action before or after the flags.
	action := "up"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		action = fs.Arg(0)
	}
	if action != "up" && action != "status" {
		return usageError{fmt.Sprintf("migrate: unknown action %q (up or status)", action)}
	}
	path, err := dbPath()
	if err != nil {
		return err
	}
	var list []store.MigrationStatus
	if action == "status" {
		// Read-only: status never changes the database.
		list, err = store.ReadMigrationStatus(ctx, path)
	} else {
		// Opening the store applies every pending migration.
		var st *store.Store
		if st, err = store.Open(ctx, path); err == nil {
			list, err = st.MigrationStatus(ctx)
			st.Close()
		}
	}
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED")
	for _, m := range list {
		applied := "pending"
		if m.Applied {
			applied = m.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", m.Version, m.Name, applied)
	}
	return tw.Flush()
}
