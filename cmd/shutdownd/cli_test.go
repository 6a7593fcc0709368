package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// runCLI runs the command line in-process and returns stdout, stderr and
// the error run returned.
func runCLI(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestCLITokenLifecycle(t *testing.T) {
	db := filepath.Join(t.TempDir(), "s.db")
	out, errOut, err := runCLI("token", "create", "--database", db, "--name", "ups", "--scopes", "read,shutdown", "--allow-cidr", "10.0.9.7/24", "--expires", "90d")
	if err != nil {
		t.Fatalf("create: %v (%s)", err, errOut)
	}
	secret := strings.TrimSpace(out)
	// The token is alone on stdout, and nothing else is.
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(secret, "sdt_") || len(secret) < 40 {
		t.Fatalf("stdout = %q, want the token alone", out)
	}
	if strings.Contains(errOut, secret) {
		t.Fatal("token repeated on stderr")
	}
	st, err := store.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := st.TokenByHash(context.Background(), store.HashToken(secret))
	st.Close()
	if err != nil {
		t.Fatalf("token not stored by hash: %v", err)
	}
	if strings.Join(tok.Scopes, ",") != "read,shutdown" || strings.Join(tok.CIDRs, ",") != "10.0.9.0/24" || tok.ExpiresAt == nil || time.Until(*tok.ExpiresAt) < 89*24*time.Hour {
		t.Fatalf("stored token = %+v", tok)
	}
	raw, _ := os.ReadFile(db)
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("plain token found in the database file")
	}

	out, _, err = runCLI("token", "list", "--database", db)
	if err != nil || !strings.Contains(out, "ups") || !strings.Contains(out, "active") || strings.Contains(out, secret) {
		t.Fatalf("list = %q, %v", out, err)
	}
	if _, _, err := runCLI("token", "create", "--database", db, "--name", "ups", "--scopes", "read"); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, _, err := runCLI("token", "revoke", "--database", db, "ups"); err != nil {
		t.Fatal(err)
	}
	out, _, _ = runCLI("token", "list", "--database", db)
	if !strings.Contains(out, "revoked") {
		t.Fatalf("after revoke: %q", out)
	}
	if _, _, err := runCLI("token", "revoke", "--database", db, "nobody"); err == nil {
		t.Fatal("revoking an unknown token succeeded")
	}
}

func TestCLIRejectsBadArguments(t *testing.T) {
	db := filepath.Join(t.TempDir(), "s.db")
	cases := [][]string{
		{"token", "create", "--database", db, "--name", "x", "--scopes", "read,admin"},
		{"token", "create", "--database", db, "--name", "x"},
		{"token", "create", "--database", db, "--name", "x", "--scopes", "read", "--expires", "soon"},
		{"token", "create", "--database", db, "--name", "x", "--scopes", "read", "--expires", "200000d"}, // overflowed into the past
		{"token", "create", "--database", db, "--name", "x", "--scopes", "read", "--expires", "100000h"},
		{"token", "create", "--database", db, "--name", "x", "--scopes", "read", "--allow-cidr", "10.0.0.300/8"},
		{"token", "create", "--name", "x", "--scopes", "read"},
		{"frobnicate"},
		{"check-config"},
		{"migrate", "sideways", "--database", db},
	}
	for _, c := range cases {
		_, _, err := runCLI(c...)
		if err == nil {
			t.Errorf("%v: no error", c)
			continue
		}
		if _, ok := err.(usageError); !ok {
			t.Errorf("%v: %v is not a usage error", c, err)
		}
	}
	// None of it created a token.
	if _, err := os.Stat(db); err == nil {
		st, _ := store.Open(context.Background(), db)
		defer st.Close()
		if toks, _ := st.ListTokens(context.Background()); len(toks) != 0 {
			t.Fatalf("bad arguments created %d tokens", len(toks))
		}
	}
}

func TestCLICheckConfigPrintsThePlanOrTheLineOfTheError(t *testing.T) {
	dir := t.TempDir()
	site, err := sitesim.Start(context.Background(), sitesim.Options{Dir: dir, VMsPerProject: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	path, err := site.WriteConfig("127.0.0.1:0", filepath.Join(dir, "db"))
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI("check-config", "--config", path)
	if err != nil {
		t.Fatalf("check-config: %v", err)
	}
	for _, want := range []string{"compute-01", "control-01", "ceph osd set noout", "systemctl stop ceph.target", "redfish", "is valid"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, sitesim.BMCPassword()) {
		t.Error("plan shows the BMC password")
	}
	// Break line 2 of the file.
	raw, _ := os.ReadFile(path)
	lines := strings.SplitN(string(raw), "\n", 3)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(lines[0]+"\nlisten_port: 9\n"+lines[2]), 0o600)
	_, _, err = runCLI("check-config", "--config", bad)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:2:") || !strings.Contains(err.Error(), "listen_port") {
		t.Fatalf("bad config error = %v, want file:2: and the key", err)
	}
}

func TestCLIMigrateShowsAppliedMigrations(t *testing.T) {
	db := filepath.Join(t.TempDir(), "s.db")
	out, _, err := runCLI("migrate", "up", "--database", db)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "1 ") || strings.Contains(out, "pending") {
		t.Fatalf("migrate up = %q", out)
	}
	out, _, err = runCLI("migrate", "status", "--database", db)
	if err != nil || strings.Contains(out, "pending") {
		t.Fatalf("migrate status = %q %v", out, err)
	}
}

// TestTokenLandsWhereServeLooks: with SHUTDOWND_CONFIG and
// SHUTDOWND_DATABASE both in the environment (an environment file shared
// with the service), `token create` writes to the configuration's database,
// the one serve reads; and it needs none of the secrets' variables, which
// only the service's unit sets.
func TestTokenLandsWhereServeLooks(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "shutdownd.yaml")
	if err := os.WriteFile(cfg, []byte("database: cfg.db\nbmc: {password_env: SHUTDOWND_TEST_NOT_SET}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHUTDOWND_CONFIG", cfg)
	t.Setenv("SHUTDOWND_DATABASE", filepath.Join(dir, "other.db"))
	if _, errOut, err := runCLI("token", "create", "--name", "ups", "--scopes", "shutdown"); err != nil {
		t.Fatalf("token create: %v\n%s", err, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.db")); err == nil {
		t.Error("the token went to SHUTDOWND_DATABASE, which serve does not read when a config is set")
	}
	st, err := store.Open(context.Background(), filepath.Join(dir, "cfg.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if toks, _ := st.ListTokens(context.Background()); len(toks) != 1 || toks[0].Name != "ups" {
		t.Errorf("tokens in the configuration's database: %+v", toks)
	}
}

// TestAllowCIDRForms: --allow-cidr takes a network or a single address, as
// trusted_proxies does; an IPv4-mapped network is stored as IPv4 (clients
// arrive as IPv4); host bits are masked, and said so on stderr.
func TestAllowCIDRForms(t *testing.T) {
	db := filepath.Join(t.TempDir(), "s.db")
	for i, tc := range []struct{ in, want, note string }{
		{"10.0.9.0/24", "10.0.9.0/24", ""},
		{"10.0.9.5", "10.0.9.5/32", ""},
		{"2001:db8::1", "2001:db8::1/128", ""},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8", ""},
		{"10.0.9.7/24", "10.0.9.0/24", "has host bits set; allowing the network 10.0.9.0/24"},
	} {
		name := fmt.Sprintf("t%d", i)
		_, errOut, err := runCLI("token", "create", "--database", db, "--name", name, "--scopes", "read", "--allow-cidr", tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if tc.note != "" && !strings.Contains(errOut, tc.note) {
			t.Errorf("%s: stderr %q lacks %q", tc.in, errOut, tc.note)
		}
		st, err := store.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		toks, _ := st.ListTokens(context.Background())
		st.Close()
		for _, tok := range toks {
			if tok.Name == name && (len(tok.CIDRs) != 1 || tok.CIDRs[0] != tc.want) {
				t.Errorf("%s stored as %v, want %s", tc.in, tok.CIDRs, tc.want)
			}
		}
	}
	if _, _, err := runCLI("token", "create", "--database", db, "--name", "bad", "--scopes", "read", "--allow-cidr", "10.0.0.300"); err == nil {
		t.Error("an invalid address was accepted")
	}
}
