package runner

import (
	"fmt"
	"strings"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

func (e *exec) storageStep(step store.Step) (store.StepState, string, error) {
	st := e.r.cfg.Storage
	if st.Type == "" || st.Type == "none" {
		return store.StepSkipped, "no storage layer configured", nil
	}
	if e.job.Kind == store.KindSimulation {
		return e.storageCheck(step)
	}
	return e.storageStop(step)
}

// storageCheck runs only the read-only health command on the admin host.
func (e *exec) storageCheck(step store.Step) (store.StepState, string, error) {
	st := e.r.cfg.Storage
	hostName := st.AdminHost
	if hostName == "" || st.HealthCommand == "" {
		return store.StepSkipped, "no storage health command configured", nil
	}
	e.progress("Checking storage health on %s", hostName)
	h, ok := e.r.cfg.Host(hostName)
	if !ok {
		return store.StepFailed, "", fmt.Errorf("storage host %s not configured", hostName)
	}
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "storage", Target: hostName, Operation: "check-storage-health"}
	a, err := e.r.store.BeginAction(e.db(), key, st.HealthCommand)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("record action: %w", err)
	}
	out, err := e.runOn(h, st.HealthCommand)
	if err != nil {
		e.fail("storage health on %s: %v", hostName, err)
		e.finishAction(a.ID, store.ActionFailed, "", err.Error())
		return store.StepFailed, "", err
	}
	detail := fmt.Sprintf("%s: %s", st.HealthCommand, firstLine(out))
	e.finishAction(a.ID, store.ActionSucceeded, detail, "")
	return store.StepSucceeded, detail, nil
}

// storageStop runs the storage plan in order, one command at a time: the
// Ceph flags must be set before any daemon stops. A failed command is
// recorded and the plan goes on, because the hosts must still go down.
func (e *exec) storageStop(step store.Step) (store.StepState, string, error) {
	plan := e.r.cfg.Storage.Plan()
	prior, err := e.r.store.StepActions(e.db(), step.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	done := map[string]bool{}
	for _, a := range prior {
		if a.State == store.ActionSucceeded {
			done[a.Target+"\x00"+a.TargetID] = true
		}
	}
	conns := map[string]HostConn{}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	failed := 0
	for i, c := range plan {
		if e.stopping() {
			return store.StepCancelled, fmt.Sprintf("%d/%d commands run", i, len(plan)), errCancelled
		}
		e.progress("Stopping storage (%d/%d commands): %s on %s", i, len(plan), c.Command, c.Host)
		if done[c.Host+"\x00"+c.Command] {
			continue
		}
		key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: "storage", Target: c.Host, TargetID: c.Command, Operation: c.Operation()}
		a, err := e.r.store.BeginAction(e.db(), key, c.Command)
		if err != nil {
			return store.StepFailed, "", fmt.Errorf("record action: %w", err)
		}
		out, err := e.runCached(conns, c)
		if err != nil && e.ctx.Err() != nil {
			// The service is stopping: the command's outcome is unknown, so
			// the action stays running and the resumed job runs it again
			// (every storage command is idempotent). No failure is invented.
			return store.StepCancelled, fmt.Sprintf("%d/%d commands run", i, len(plan)), e.ctx.Err()
		}
		if err != nil {
			failed++
			e.fail("storage %q on %s: %v", c.Command, c.Host, err)
			e.finishAction(a.ID, store.ActionFailed, "", err.Error())
			continue
		}
		e.finishAction(a.ID, store.ActionSucceeded, firstLine(out), "")
	}
	detail := fmt.Sprintf("%d/%d commands succeeded", len(plan)-failed, len(plan))
	e.progress("Stopping storage (%d/%d commands)", len(plan), len(plan))
	if failed > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d storage commands failed", failed)
	}
	return store.StepSucceeded, detail, nil
}

func (e *exec) runCached(conns map[string]HostConn, c config.StorageCommand) (string, error) {
	h, ok := e.r.cfg.Host(c.Host)
	if !ok {
		return "", fmt.Errorf("host %s not configured", c.Host)
	}
	conn, ok := conns[c.Host]
	if !ok {
		var err error
		conn, err = e.r.deps.DialHost(e.ctx, h)
		if err != nil {
			return "", fmt.Errorf("ssh %s: %w", c.Host, err)
		}
		conns[c.Host] = conn
	}
	res, err := conn.Run(e.ctx, c.Command)
	if err != nil {
		// A broken connection is not reused for the next command.
		conn.Close()
		delete(conns, c.Host)
		return res.Stdout, err
	}
	return res.Stdout, nil
}

func (e *exec) runOn(h config.Host, cmd string) (string, error) {
	conn, err := e.r.deps.DialHost(e.ctx, h)
	if err != nil {
		return "", fmt.Errorf("ssh %s: %w", h.Name, err)
	}
	defer conn.Close()
	res, err := conn.Run(e.ctx, cmd)
	return res.Stdout, err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
