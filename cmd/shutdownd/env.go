package main

import (
	"fmt"
	"net"
	"os"

	"github.com/edgeops/shutdownd/config"
)

// Environment variables for the common settings, so a systemd unit, a
// container or an operator's shell can set them once. A flag given on the
// command line always wins over its variable.
const (
	envConfig   = "SHUTDOWND_CONFIG"   // --config
	envDatabase = "SHUTDOWND_DATABASE" // --database (store commands)
	envListen   = "SHUTDOWND_LISTEN"   // serve: overrides listen of the config
	// envBootIDFile replaces /proc/sys/kernel/random/boot_id for serve. Only
	// tests set it, to play a reboot of the management machine between two
	// runs of the real binary; in production the kernel's file is the truth.
	envBootIDFile = "SHUTDOWND_BOOT_ID_FILE"
	// envOwnHostKeys is a glob of this machine's SSH public host keys, the
	// keys no host but the self host may present (default
	// /etc/ssh/ssh_host_*_key.pub). Only the tests set it: the machine
	// that runs them has an sshd of its own, and they need a key they
	// control to stand for "this machine".
	envOwnHostKeys = "SHUTDOWND_OWN_HOST_KEYS"
	// The client's variables (SHUTDOWND_URL, SHUTDOWND_TOKEN,
	// SHUTDOWND_TOKEN_FILE, SHUTDOWND_CA_FILE) are read in client.go.
)

// envStore returns the database and configuration named by the
// environment, for commands given neither --database nor --config.
func envStore() (database, cfgPath string) {
	return os.Getenv(envDatabase), os.Getenv(envConfig)
}

// loadConfig loads the configuration as serve, check-config and demo do:
// with this machine's host keys read from envOwnHostKeys when it is set.
func loadConfig(path string) (*config.Config, error) {
	var opts config.Options
	if p := os.Getenv(envOwnHostKeys); p != "" {
		opts.OwnHostKeys, opts.OwnHostKeysSet = p, true
	}
	return config.LoadWith(path, opts)
}

// overrideListen replaces the configuration's listen address when one was
// given by flag or environment, after the same check the loader applies
// to an address (host:port with a numeric port).
func overrideListen(cfg *config.Config, listen string) error {
	if listen == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil || port == "" {
		return usageError{fmt.Sprintf("serve: listen address %q: want HOST:PORT, e.g. 127.0.0.1:8080", listen)}
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return usageError{fmt.Sprintf("serve: listen address %q: bad port", listen)}
	}
	cfg.Listen = listen
	return nil
}
