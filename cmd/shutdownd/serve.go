package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
)

func cmdServe(ctx context.Context, args []string, logger *slog.Logger, stderr io.Writer) error {
	fs := newFlags("serve", stderr)
	cfgPath := fs.String("config", os.Getenv(envConfig), "configuration file (YAML; env "+envConfig+")")
	listen := fs.String("listen", os.Getenv(envListen), "listen address, overrides the configuration's (env "+envListen+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError{"serve: --config is required (or " + envConfig + ")"}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if err := overrideListen(cfg, *listen); err != nil {
		return err
	}
	m := &Main{Config: cfg, Logger: logger, BootIDFile: os.Getenv(envBootIDFile)}
	if err := m.Run(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	logger.Info("signal received; stopping (a running shutdown resumes at next start)")
	if err := m.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	cfgPath := fs.String("config", os.Getenv(envConfig), "configuration file (YAML; env "+envConfig+")")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *cfgPath == "" {
		return usageError{"check-config: --config is required (or " + envConfig + ")"}
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	cfg.Describe(stdout)
	fmt.Fprintf(stdout, "\nconfiguration %s is valid\n", *cfgPath)
	return nil
}
