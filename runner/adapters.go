package runner

import (
	"context"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/runner/openstack"
)

func openCloud(ctx context.Context, cfg config.OpenStack, onRetry func(op string, attempt int, err error)) (Cloud, error) {
	return openstack.New(ctx, openstack.Options{
		Cloud:          cfg.Cloud,
		CloudsFile:     cfg.CloudsFile,
		Openrc:         cfg.Source == config.SourceOpenrc,
		RequestTimeout: cfg.RequestTimeout,
		Concurrency:    cfg.Concurrency,
		OnRetry: func(op string, attempt int, err error, _ time.Duration) {
			if onRetry != nil {
				onRetry(op, attempt, err)
			}
		},
	})
}

func dialHost(ctx context.Context, h config.Host) (HostConn, error) {
	return hostctl.Dial(ctx, hostctl.Target{
		Name:           h.Name,
		Address:        h.Address,
		User:           h.SSH.User,
		KeyFile:        h.SSH.KeyFile,
		KnownHosts:     h.SSH.KnownHosts,
		ConnectTimeout: h.SSH.ConnectTimeout,
		CommandTimeout: h.SSH.CommandTimeout,
		RefuseKeys:     refuseKeys(h),
	})
}

// refuseKeys are the host keys h must never present: this machine's own,
// unless h is this machine.
func refuseKeys(h config.Host) []hostctl.OwnKey {
	if h.Self {
		return nil
	}
	out := make([]hostctl.OwnKey, len(h.RefuseKeys))
	for i, k := range h.RefuseKeys {
		out[i] = hostctl.OwnKey{File: k.File, Key: k.Key}
	}
	return out
}

func openBMC(ctx context.Context, h config.Host) (PowerController, error) {
	b := h.BMC
	return bmc.Open(ctx, bmc.Target{
		Name:        h.Name,
		Address:     b.Address,
		Port:        b.Port,
		Protocol:    b.Protocol,
		User:        b.User,
		Password:    b.Password.Reveal(),
		InsecureTLS: b.InsecureTLS,
		CAFile:      b.CAFile,
		Timeout:     b.Timeout,
	})
}
