package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// startStorageStep unfreezes storage: for Ceph, pause and nodown unset,
// ceph.target started on every storage host, the wait until every OSD is
// up, then the recovery flags unset and the health recorded; for commands,
// storage.startup_commands in order; for none, nothing.
func (e *exec) startStorageStep(step store.Step) (store.StepState, string, error) {
	s := e.r.cfg.Storage
	switch {
	case s.Type == config.StorageCeph:
		return e.startCeph(step)
	case s.Type == config.StorageCommands && len(s.StartupCommands) > 0:
		return e.runStartupCommands(step, s.StartupCommands)
	case s.Type == config.StorageCommands:
		e.event("warn", "storage type commands without storage.startup_commands: storage is left as the shutdown left it")
		return store.StepSkipped, "no storage.startup_commands", nil
	}
	return store.StepSkipped, "storage type " + s.Type, nil
}

// startupRun runs the storage commands of one startup step, each once: a
// command recorded succeeded before a restart is not run again.
type startupRun struct {
	e    *exec
	step store.Step
	rec  *recorder
	done map[store.ActionKey]bool
	down unreachableHosts
}

func (e *exec) newStartupRun(step store.Step) (*startupRun, error) {
	prior, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		return nil, fmt.Errorf("read actions: %w", err)
	}
	r := &startupRun{e: e, step: step, rec: newRecorder(e), done: map[store.ActionKey]bool{}}
	for _, a := range prior {
		if a.State == store.ActionSucceeded {
			r.done[store.ActionKey{JobID: a.JobID, StepID: a.StepID, TargetKind: a.TargetKind, Target: a.Target, TargetID: a.TargetID, Operation: a.Operation}] = true
		}
	}
	return r, nil
}

// run runs c unless it already succeeded, and reports whether it succeeded.
func (r *startupRun) run(c config.StorageCommand) bool {
	if r.done[storageKey(r.e, r.step, c)] {
		return true
	}
	res, _ := r.e.storageCommand(r.step, c, nil, r.rec, &r.down)
	return res == cmdSucceeded
}

func (e *exec) runStartupCommands(step store.Step, cmds []config.StorageCommand) (store.StepState, string, error) {
	r, err := e.newStartupRun(step)
	if err != nil {
		return store.StepFailed, "", err
	}
	failed := 0
	for i, c := range cmds {
		if e.stopping() {
			return store.StepCancelled, fmt.Sprintf("%d/%d commands run", i, len(cmds)), errCancelled
		}
		e.progress("Starting storage: %s on %s (%d/%d)", c.Command, c.Host, i+1, len(cmds))
		if !r.run(c) {
			failed++
		}
	}
	detail := fmt.Sprintf("%d/%d commands succeeded", len(cmds)-failed, len(cmds))
	if failed > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d storage commands failed", failed)
	}
	return store.StepSucceeded, detail, nil
}

// startCeph brings Ceph back in the order that keeps data still until the
// cluster is whole: pause and nodown first (with nodown set, an OSD whose
// daemon is not running still reads up, and the wait would prove
// nothing), then ceph.target on each storage host, then the wait until
// every OSD is up, and only then the flags that let data move. When the
// OSDs are not all up, the recovery flags stay set: a cluster missing a
// host must not start rebalancing onto the others; the operator decides.
func (e *exec) startCeph(step store.Step) (store.StepState, string, error) {
	s := e.r.cfg.Storage
	r, err := e.newStartupRun(step)
	if err != nil {
		return store.StepFailed, "", err
	}
	e.progress("Starting Ceph: unsetting %v on %s", config.CephEarlyUnset, s.AdminHost)
	ok := true
	for _, f := range config.CephEarlyUnset {
		ok = r.run(config.StorageCommand{Host: s.AdminHost, Command: config.CephUnsetCommand(f)}) && ok
	}
	if e.stopping() {
		return store.StepCancelled, "", errCancelled
	}
	e.progress("Starting Ceph: starting ceph.target on %d storage hosts", len(s.Hosts))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, h := range s.Hosts {
		wg.Go(func() {
			if !r.run(config.StorageCommand{Host: h, Command: config.CephStartCommand}) {
				mu.Lock()
				ok = false
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if e.stopping() {
		return store.StepCancelled, "", errCancelled
	}
	if !ok {
		return store.StepFailed, "recovery flags left set", fmt.Errorf("ceph start commands failed; %v left set", config.CephLateUnset)
	}
	detail, err := e.waitOSDs(r)
	if err != nil {
		return e.cephNotReady(detail, err)
	}
	e.progress("Starting Ceph: every OSD up; unsetting %v", config.CephLateUnset)
	for _, f := range config.CephLateUnset {
		ok = r.run(config.StorageCommand{Host: s.AdminHost, Command: config.CephUnsetCommand(f)}) && ok
	}
	// The health that follows is recorded, not judged: HEALTH_WARN while
	// the cluster settles is expected.
	health := config.StorageCommand{Host: s.AdminHost, Command: s.HealthCommand}
	delete(r.done, storageKey(e, step, health))
	r.run(health)
	if !ok {
		return store.StepFailed, detail, fmt.Errorf("some ceph flags could not be unset")
	}
	return store.StepSucceeded, detail, nil
}

func (e *exec) cephNotReady(detail string, err error) (store.StepState, string, error) {
	if e.ctx.Err() != nil {
		return store.StepCancelled, detail, e.ctx.Err()
	}
	if errors.Is(err, errCancelled) {
		return store.StepCancelled, detail, err
	}
	msg := fmt.Sprintf("%v; %v left set", err, config.CephLateUnset)
	return store.StepFailed, detail, fmt.Errorf("%s", msg)
}

// osdStat is the part of `ceph osd stat -f json` a startup reads.
type osdStat struct {
	NumOSDs   int `json:"num_osds"`
	NumUpOSDs int `json:"num_up_osds"`
}

// waitOSDs polls `ceph osd stat -f json` on the admin host until every OSD
// is up, for at most timeouts.storage_ready. A storage host that did not
// come back makes the wait pointless: it fails at once, naming it.
func (e *exec) waitOSDs(r *startupRun) (string, error) {
	s := e.r.cfg.Storage
	key := store.ActionKey{JobID: e.job.ID, StepID: r.step.ID, TargetKind: "storage", Target: s.AdminHost,
		TargetID: config.CephOSDStatCommand, Operation: opCephWaitOSDs}
	if r.done[key] {
		return "every OSD up (before the restart)", nil
	}
	timeout := e.r.cfg.Timeouts.StorageReady
	a, err := r.rec.begin(key, fmt.Sprintf("waiting up to %s until every OSD is up", timeout))
	if err != nil {
		return "", fmt.Errorf("record action: %w", err)
	}
	notBack := map[string]string{}
	for name, why := range e.hostsNotBack() {
		for _, h := range s.Hosts {
			if h == name {
				notBack[name] = why
			}
		}
	}
	admin, _ := e.r.cfg.Host(s.AdminHost)
	start := time.Now()
	deadline := start.Add(timeout)
	var last osdStat
	var lastErr error
	for len(notBack) == 0 {
		out, err := e.runOn(admin, config.CephOSDStatCommand)
		if err == nil {
			err = json.Unmarshal([]byte(out), &last)
		}
		lastErr = err
		if err == nil {
			e.progress("Starting Ceph: %d/%d OSDs up", last.NumUpOSDs, last.NumOSDs)
			if last.NumOSDs > 0 && last.NumUpOSDs == last.NumOSDs {
				detail := fmt.Sprintf("%d/%d OSDs up after %s", last.NumUpOSDs, last.NumOSDs, since(start))
				r.rec.finish(a.ID, store.ActionSucceeded, detail, "")
				return detail, nil
			}
		}
		if e.stopping() {
			return "", errCancelled
		}
		if !time.Now().Before(deadline) {
			break
		}
		select {
		case <-e.ctx.Done():
		case <-time.After(min(e.r.cfg.Timeouts.BMCPollInterval, time.Until(deadline)+time.Millisecond)):
		}
	}
	msg := fmt.Sprintf("%d/%d OSDs up after %s", last.NumUpOSDs, last.NumOSDs, timeout)
	switch {
	case len(notBack) > 0:
		msg = "storage hosts not back: " + hostList(notBack) + "; the OSDs were not waited for"
	case lastErr != nil:
		msg = fmt.Sprintf("OSD state unreadable after %s: %v", timeout, lastErr)
	}
	r.rec.finish(a.ID, store.ActionFailed, "", msg)
	return "", fmt.Errorf("%s", msg)
}
