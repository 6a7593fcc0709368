package bmc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	bmclib "github.com/bmc-toolbox/bmclib/v2"
)

// PowerState is a host's power state, the same words whatever the protocol
// (ipmitool says "Chassis Power is on", Redfish says "On").
type PowerState string

// Normalised power states.
const (
	On      PowerState = "On"
	Off     PowerState = "Off"
	Unknown PowerState = "Unknown"
)

// ErrUnexpectedState is returned (wrapped, with the raw text) when the BMC
// answers with a power state that is neither on nor off, e.g. Redfish
// "PoweringOff"; the runner keeps polling rather than assuming either.
var ErrUnexpectedState = errors.New("unexpected power state")

// PowerState reads the host's power state.
func (c *Client) PowerState(ctx context.Context) (PowerState, error) {
	var raw string
	err := c.call(ctx, func(ctx context.Context, cl *bmclib.Client) (err error) {
		raw, err = cl.GetPowerState(ctx)
		return err
	})
	if err != nil {
		return Unknown, c.wrap("read power state", err)
	}
	st := normalise(raw)
	if st == Unknown {
		return Unknown, c.wrap("read power state", fmt.Errorf("%w %q", ErrUnexpectedState, strings.TrimSpace(raw)))
	}
	return st, nil
}

// normalise maps provider answers to On/Off. ipmitool output is matched
// line by line because warnings may precede the status line.
func normalise(raw string) PowerState {
	for _, line := range strings.Split(raw, "\n") {
		switch strings.ToLower(strings.TrimSpace(line)) {
		case "on", "chassis power is on":
			return On
		case "off", "chassis power is off":
			return Off
		}
	}
	return Unknown
}

// SoftOff asks the host OS to shut down (Redfish GracefulShutdown, IPMI
// "chassis power soft"). It returns once the BMC accepted the request; the
// caller confirms Off by polling PowerState.
func (c *Client) SoftOff(ctx context.Context) error {
	return c.setPower(ctx, "soft", "soft off")
}

// HardOff cuts power at once (Redfish ForceOff, IPMI "chassis power off").
func (c *Client) HardOff(ctx context.Context) error {
	return c.setPower(ctx, "off", "hard off")
}

func (c *Client) setPower(ctx context.Context, state, op string) error {
	if state == "soft" && c.protocol == ProtocolIPMI {
		// bmclib's ipmitool soft off reads the power state first and, when
		// that read fails, answers "done" without sending anything. Read
		// it here, where a failure is an error: the runner then goes on to
		// the hard off instead of waiting out bmc_soft_off for nothing.
		ps, err := c.PowerState(ctx)
		if err != nil {
			return c.wrap(op, fmt.Errorf("power state before the soft off: %w", err))
		}
		if ps == Off {
			return nil
		}
	}
	err := c.call(ctx, func(ctx context.Context, cl *bmclib.Client) error {
		ok, err := cl.SetPowerState(ctx, state)
		if err == nil && ok {
			return nil
		}
		// bmclib's gofish provider answers (false, nil) after it has POSTed
		// GracefulShutdown (the host is not off yet), which bmclib turns
		// into "failed to set power state". The request was accepted when
		// our one provider was attempted and reported no error of its own.
		md := cl.GetMetadata()
		if err != nil && len(md.ProvidersAttempted) == 1 && len(md.FailedProviderDetail) == 0 && state == "soft" {
			return nil
		}
		if err == nil {
			err = errors.New("bmc did not confirm the request")
		}
		return err
	})
	if err != nil {
		return c.wrap(op, err)
	}
	return nil
}

// PowerOn switches the host on (Redfish On, IPMI "chassis power on"). It
// returns once the BMC accepted the request; the caller waits for the OS
// to answer (SSH), since On at the BMC says nothing about the boot.
func (c *Client) PowerOn(ctx context.Context) error {
	return c.setPower(ctx, "on", "power on")
}
