package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHelpOnEveryCommand: -h, --help and "help CMD" print the command's
// usage, examples and flags to stdout and succeed (exit 0).
func TestHelpOnEveryCommand(t *testing.T) {
	cmds := [][]string{
		{"serve"}, {"check-config"}, {"demo"}, {"migrate"},
		{"token"}, {"token", "create"}, {"token", "list"}, {"token", "revoke"},
		{"client"}, {"client", "simulate"}, {"client", "shutdown"}, {"client", "status"},
		{"client", "jobs"}, {"client", "job"}, {"client", "cancel"},
		{"audit"}, {"audit", "jobs"}, {"audit", "job"}, {"audit", "failures"}, {"audit", "verify"},
	}
	for _, c := range cmds {
		for _, form := range [][]string{
			append(append([]string{}, c...), "-h"),
			append(append([]string{}, c...), "--help"),
			append([]string{"help"}, c...),
		} {
			out, errOut, err := runCLI(form...)
			if err != nil {
				t.Errorf("%v: %v", form, err)
				continue
			}
			if !strings.Contains(out, "Usage: shutdownd "+strings.Join(c, " ")) || !strings.Contains(out, "Examples:\n  ") {
				t.Errorf("%v: no usage or examples in:\n%s", form, out)
			}
			if errOut != "" {
				t.Errorf("%v: help wrote to stderr: %s", form, errOut)
			}
			// Commands with a flag set list their flags.
			if len(c) > 1 || (c[0] != "token" && c[0] != "client" && c[0] != "audit") {
				if !strings.Contains(out, "\nFlags:\n") {
					t.Errorf("%v: no flags listed:\n%s", form, out)
				}
			}
		}
	}
	out, _, err := runCLI("client", "simulate", "-h")
	if err != nil || !strings.Contains(out, "-token-file") || !strings.Contains(out, "SHUTDOWND_TOKEN") || !strings.Contains(out, "-wait") {
		t.Errorf("client simulate -h lacks the token and wait flags: %v\n%s", err, out)
	}
	// The top-level help mentions the client and the per-command help.
	out, _, err = runCLI("--help")
	if err != nil || !strings.Contains(out, "shutdownd client") || !strings.Contains(out, "COMMAND -h") {
		t.Errorf("shutdownd --help: %v\n%s", err, out)
	}
	// A real flag error is still a usage error.
	var ue usageError
	if _, _, err := runCLI("serve", "--bogus"); !errors.As(err, &ue) {
		t.Errorf("serve --bogus: %v, want a usage error", err)
	}
}

// TestEnvironmentSettings: SHUTDOWND_DATABASE / SHUTDOWND_CONFIG stand in
// for the flags (a flag wins), SHUTDOWND_LISTEN overrides the listen
// address of serve.
func TestEnvironmentSettings(t *testing.T) {
	ctx := context.Background()
	d, err := startDemo(ctx, "127.0.0.1:0", "", e2eFast)
	if err != nil {
		t.Fatalf("start demo site: %v", err)
	}
	t.Cleanup(d.Close)
	cfgPath := d.Config.Path
	if cfgPath == "" {
		cfgPath = filepath.Join(d.dir, "shutdownd.yaml")
	}
	envDB := filepath.Join(t.TempDir(), "env.db")

	// SHUTDOWND_DATABASE alone.
	t.Setenv(envDatabase, envDB)
	t.Setenv(envConfig, "")
	if _, errOut, err := runCLI("token", "create", "--name", "from-env", "--scopes", "read"); err != nil {
		t.Fatalf("token create with SHUTDOWND_DATABASE: %v %s", err, errOut)
	}
	out, _, err := runCLI("token", "list")
	if err != nil || !strings.Contains(out, "from-env") {
		t.Fatalf("token list with SHUTDOWND_DATABASE: %v\n%s", err, out)
	}
	// An explicit --config wins over SHUTDOWND_DATABASE.
	out, _, err = runCLI("token", "list", "--config", cfgPath)
	if err != nil || strings.Contains(out, "from-env") {
		t.Fatalf("token list --config with SHUTDOWND_DATABASE set: %v\n%s", err, out)
	}
	// SHUTDOWND_CONFIG alone: check-config and the store commands use it.
	t.Setenv(envDatabase, "")
	t.Setenv(envConfig, cfgPath)
	out, _, err = runCLI("check-config")
	if err != nil || !strings.Contains(out, "is valid") {
		t.Fatalf("check-config with SHUTDOWND_CONFIG: %v\n%s", err, out)
	}
	if out, _, err = runCLI("migrate", "status"); err != nil || !strings.Contains(out, "VERSION") {
		t.Fatalf("migrate status with SHUTDOWND_CONFIG: %v\n%s", err, out)
	}

	// OS_CLOUD names the cloud when the openstack section does not.
	noCloud := filepath.Join(d.dir, "nocloud.yaml")
	raw, err := os.ReadFile(cfgPath)
	if err != nil || !bytes.Contains(raw, []byte("  cloud: sim\n")) {
		t.Fatalf("demo config has no cloud line: %v", err)
	}
	if err := os.WriteFile(noCloud, bytes.Replace(raw, []byte("  cloud: sim\n"), nil, 1), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OS_CLOUD", "")
	if _, _, err := runCLI("check-config", "--config", noCloud); err == nil || !strings.Contains(err.Error(), "OS_CLOUD") {
		t.Fatalf("config without cloud and no OS_CLOUD: %v, want an error naming OS_CLOUD", err)
	}
	t.Setenv("OS_CLOUD", "sim")
	if out, _, err = runCLI("check-config", "--config", noCloud); err != nil || !strings.Contains(out, `cloud "sim"`) {
		t.Fatalf("config without cloud, OS_CLOUD=sim: %v\n%s", err, out)
	}

	// SHUTDOWND_LISTEN: a bad value is a usage error before anything starts.
	t.Setenv(envListen, "nonsense")
	var ue usageError
	if _, _, err := runCLI("serve"); !errors.As(err, &ue) {
		t.Fatalf("serve with SHUTDOWND_LISTEN=nonsense: %v, want a usage error", err)
	}
	// A good one is where serve listens (the config says port 0).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv(envListen, addr)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- cmdServe(sctx, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), io.Discard)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("serve is not answering on SHUTDOWND_LISTEN=%s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}
