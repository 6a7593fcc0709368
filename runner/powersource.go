package runner

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut"
)

// checkPowerSource is the simulation's check of the power source (SPEC
// section 7): connect to the NUT server, log in as configured, read the
// UPS, and report what it read as an event of the job. A NUT server that
// cannot be read fails the simulation, since the watcher could not see an
// outage either. It is an event, not a target action, because the actions
// table's target kinds are fixed by its schema.
func (e *exec) checkPowerSource() {
	ps := e.r.cfg.PowerSource
	if ps == nil {
		return
	}
	text, err := readPowerSource(e.ctx, ps)
	if err != nil {
		e.fail("power source %s: %v", ps.Source(), err)
		e.event("error", "check power source "+ps.Source()+": failed", err.Error())
		return
	}
	e.event("info", "check power source "+ps.Source()+": ok", text)
}

// readPowerSource reads the UPS once, as the watcher would, and describes
// the reading.
func readPowerSource(ctx context.Context, ps *config.PowerSource) (string, error) {
	n := ps.NUT
	opts := nut.Options{Address: n.Address, UPS: n.UPS, User: n.User, Password: string(n.Password), Timeout: n.Timeout}
	if n.StartTLS {
		cfg, err := nut.TLSConfig(n.CAFile)
		if err != nil {
			return "", err
		}
		opts.TLS = cfg
	}
	c, err := nut.Dial(ctx, opts)
	if err != nil {
		return "", err
	}
	defer c.Close()
	vars, err := c.Vars(ctx, n.UPS)
	if err != nil {
		return "", fmt.Errorf("read UPS %s: %w", n.UPS, err)
	}
	r, err := nut.ParseReading(vars, time.Now())
	if err != nil {
		return "", fmt.Errorf("read UPS %s: %w", n.UPS, err)
	}
	login := "no login"
	if c.LoggedIn() {
		login = "logged in as " + n.User
	}
	tls := ""
	if c.TLS() {
		tls = " over TLS"
	}
	text := fmt.Sprintf("NUT server %s%s, %s; ups.status %s", n.Address, tls, login, r.StatusText())
	if r.HasCharge {
		text += ", battery.charge " + strconv.FormatFloat(r.Charge, 'f', -1, 64) + "%"
	}
	if r.HasRuntime {
		text += fmt.Sprintf(", battery.runtime %.0f s", r.Runtime.Seconds())
	}
	return text, nil
}
