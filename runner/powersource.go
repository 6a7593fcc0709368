package runner

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/nut"
	"github.com/edgeops/shutdownd/store"
)

// StepPowerSource is the simulation's check of the power source, a step of
// its own before the others (seq 0), so that the job's result, read from
// the store, counts it like any other step.
const StepPowerSource = "power-source"

// checkPowerSource is the simulation's check of the power source: connect
// to the NUT server, log in as configured, read the UPS, and report what it
// read. A NUT server that cannot be read fails the step, and so the
// simulation, since the watcher could not see an outage either. It is a
// step, not a target action, because the actions table's target kinds are
// fixed by its schema.
func (e *exec) checkPowerSource() {
	ps := e.r.cfg.PowerSource
	if ps == nil {
		return
	}
	st, err := e.jr.EnsureStep(e.db(), 0, StepPowerSource)
	if err != nil {
		e.log.Error("ensure step", "step", StepPowerSource, "err", err)
		e.event(store.LevelError, "check power source "+ps.Source()+": not recorded", err.Error())
		return
	}
	if st.State.Final() {
		return
	}
	if err := e.jr.StartStep(st.ID); err != nil {
		e.log.Error("start step", "step", StepPowerSource, "err", err)
	}
	state, text, msg := store.StepSucceeded, "", ""
	if text, err = readPowerSource(e.ctx, ps); err != nil {
		state, msg = store.StepFailed, fmt.Sprintf("power source %s: %v", ps.Source(), err)
	}
	if err := e.jr.FinishStep(st.ID, state, text, msg); err != nil {
		e.log.Error("finish step", "step", StepPowerSource, "err", err)
	}
	if state == store.StepFailed {
		e.event(store.LevelError, "check power source "+ps.Source()+": failed", msg)
		return
	}
	e.event(store.LevelInfo, "check power source "+ps.Source()+": ok", text)
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
