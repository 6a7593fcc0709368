package runner

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/ssh"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/runner/hostctl"
	"github.com/edgeops/shutdownd/store"
)

func (e *exec) storageStep(step store.Step) (store.StepState, string, error) {
	e.pool.Release() // the VM step is over: open what is left at once
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
	key := store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetStorage, Target: hostName, Operation: store.OpCheckStorageHealth}
	a, err := e.jr.Begin(key, st.HealthCommand)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("record action: %w", err)
	}
	out, err := e.runOn(h, st.HealthCommand)
	if err != nil {
		e.finishAction(a.ID, store.ActionFailed, "", err.Error())
		return store.StepFailed, "", err
	}
	detail := fmt.Sprintf("%s: %s", st.HealthCommand, firstLine(out))
	e.finishAction(a.ID, store.ActionSucceeded, detail, "")
	return store.StepSucceeded, detail, nil
}

// storageParallel bounds the storage hosts that stop Ceph at once.
const storageParallel = 32

// storageStop runs the storage plan. The Ceph flags are set one after the
// other on the admin host (they must all be in place before any daemon
// stops); then ceph.target stops on every storage host at once (bounded by
// storageParallel): with the flags set, the order does not matter and
// nothing rebalances. A `commands` plan runs strictly in order, as
// configured. Each command is its own action, recorded before it is sent
// and after it ends; a failed command is recorded and the others go on,
// because the hosts must still go down.
func (e *exec) storageStop(step store.Step) (store.StepState, string, error) {
	plan := e.r.cfg.Storage.Plan()
	prior, err := e.jr.StepActions(e.db(), step.ID)
	if err != nil {
		return store.StepFailed, "", fmt.Errorf("read actions: %w", err)
	}
	s := &storageRun{e: e, step: step, total: len(plan), done: succeededCommands(prior), rec: newRecorder(e), down: &unreachableHosts{}}
	defer s.rec.wait()
	serial, parallel := splitPlan(e.r.cfg.Storage.Type, plan)
	if out := s.runSerial(serial); out != nil {
		return out.state, out.detail, out.err
	}
	if out := s.runParallel(parallel); out != nil {
		return out.state, out.detail, out.err
	}
	detail := fmt.Sprintf("%d/%d commands succeeded", len(plan)-int(s.failed.Load()), len(plan))
	s.rec.setProgress("Stopping storage (%d/%d commands)", len(plan), len(plan))
	if n := s.failed.Load(); n > 0 {
		return store.StepFailed, detail, fmt.Errorf("%d storage commands failed", n)
	}
	return store.StepSucceeded, detail, nil
}

// storageRun is one run of a shutdown's storage step.
type storageRun struct {
	e     *exec
	step  store.Step
	total int             // commands in the plan
	done  map[string]bool // commands that succeeded before a restart (commandKey)
	rec   *recorder
	down  *unreachableHosts

	failed, finished atomic.Int64
}

// commandKey names a storage command on its host.
func commandKey(host, command string) string { return host + "\x00" + command }

// succeededCommands are the commands a run before a restart completed:
// they are not run again.
func succeededCommands(prior []store.Action) map[string]bool {
	done := map[string]bool{}
	for _, a := range prior {
		if a.State == store.ActionSucceeded {
			done[commandKey(a.Target, a.TargetID)] = true
		}
	}
	return done
}

// splitPlan separates what runs in order (the Ceph flags, or a whole
// `commands` plan) from what runs at once (ceph.target's stop on every
// storage host).
func splitPlan(typ string, plan []config.StorageCommand) (serial, parallel []config.StorageCommand) {
	if typ != config.StorageCeph {
		return plan, nil
	}
	n := len(config.CephFlags)
	for n < len(plan) && plan[n].Command != config.CephStopCommand {
		n++ // never: Plan puts the flags first
	}
	n = min(n, len(plan))
	return plan[:n], plan[n:]
}

// commandsRun is the detail of a step that ended before its last command.
func (s *storageRun) commandsRun(n int64) string {
	return fmt.Sprintf("%d/%d commands run", n, s.total)
}

// interrupted is the outcome when the service is stopping: the outcome of
// what was in flight is unknown, so those actions stay running and the
// resumed job runs them again (every storage command is idempotent).
func (s *storageRun) interrupted() *stepOutcome {
	return &stepOutcome{store.StepCancelled, s.commandsRun(s.finished.Load()), s.e.ctx.Err()}
}

// runSerial runs cmds one after the other. It returns the step's outcome
// when the step ends here.
func (s *storageRun) runSerial(cmds []config.StorageCommand) *stepOutcome {
	for i, c := range cmds {
		if s.e.stopping() {
			return &stepOutcome{store.StepCancelled, s.commandsRun(int64(i)), errCancelled}
		}
		s.rec.setProgress("Stopping storage (%d/%d commands): %s on %s", i, s.total, c.Command, c.Host)
		if s.done[commandKey(c.Host, c.Command)] {
			s.finished.Add(1)
			continue
		}
		switch r, err := s.e.storageCommand(s.step, c, nil, s.rec, s.down); r {
		case cmdRecordFailed:
			return &stepOutcome{store.StepFailed, "", err}
		case cmdInterrupted:
			return s.interrupted()
		case cmdFailed:
			s.failed.Add(1)
		}
		s.finished.Add(1)
	}
	return nil
}

// runParallel runs cmds at once, at most storageParallel at a time. One
// transaction records every command before the first is sent, rather than
// one commit per host queued behind the others. It returns the step's
// outcome when the step ends here.
func (s *storageRun) runParallel(cmds []config.StorageCommand) *stepOutcome {
	if len(cmds) == 0 {
		return nil
	}
	s.progressParallel(len(cmds))
	var todo []config.StorageCommand
	for _, c := range cmds {
		if s.done[commandKey(c.Host, c.Command)] {
			s.finished.Add(1)
			continue
		}
		todo = append(todo, c)
	}
	begun := s.e.beginStorage(s.step, todo, s.rec)
	var (
		wg        sync.WaitGroup
		sem       = make(chan struct{}, storageParallel)
		recordErr atomic.Pointer[error]
		stopped   atomic.Bool
		cancelled bool
		skipped   []store.ActionResult
	)
	for i, c := range todo {
		sem <- struct{}{}
		if s.e.stopping() {
			<-sem
			cancelled, skipped = true, notRun(begun[i:])
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			switch r, err := s.e.storageCommand(s.step, c, begun[i], s.rec, s.down); r {
			case cmdRecordFailed:
				recordErr.CompareAndSwap(nil, &err)
				return
			case cmdInterrupted:
				stopped.Store(true)
				return
			case cmdFailed:
				s.failed.Add(1)
			}
			s.finished.Add(1)
			s.progressParallel(len(cmds))
		})
	}
	wg.Wait()
	s.rec.wait() // before anything else writes progress
	if len(skipped) > 0 {
		if err := s.e.jr.Finish(skipped...); err != nil {
			s.e.log.Error("finish skipped storage actions", "err", err)
		}
	}
	switch {
	case recordErr.Load() != nil:
		return &stepOutcome{store.StepFailed, "", *recordErr.Load()}
	case stopped.Load():
		return s.interrupted()
	case cancelled:
		return &stepOutcome{store.StepCancelled, s.commandsRun(s.finished.Load()), errCancelled}
	}
	return nil
}

func (s *storageRun) progressParallel(n int) {
	s.rec.setProgress("Stopping storage (%d/%d commands): %s on %d hosts at once", s.finished.Load(), s.total, config.CephStopCommand, n)
}

// notRun is the record of the commands a cancel left unsent.
func notRun(begun []*store.Action) []store.ActionResult {
	var out []store.ActionResult
	for _, a := range begun {
		if a != nil {
			out = append(out, store.ActionResult{ID: a.ID, State: store.ActionSkipped, Detail: "not run: job cancelled"})
		}
	}
	return out
}

// cmdResult is how one storage command ended.
type cmdResult int

const (
	cmdSucceeded    cmdResult = iota
	cmdFailed                 // recorded as failed
	cmdInterrupted            // the service is stopping; left running
	cmdRecordFailed           // the action could not be recorded; nothing was sent
)

func storageKey(e *exec, step store.Step, c config.StorageCommand) store.ActionKey {
	return store.ActionKey{JobID: e.job.ID, StepID: step.ID, TargetKind: store.TargetStorage, Target: c.Host, TargetID: c.Command, Operation: store.Operation(c.Operation())}
}

// beginStorage records the actions of cmds in one transaction. A command
// whose record could not be written gets nil: it records its own action
// (and reports the failure).
func (e *exec) beginStorage(step store.Step, cmds []config.StorageCommand, rec *recorder) []*store.Action {
	out := make([]*store.Action, len(cmds))
	if len(cmds) == 0 {
		return out
	}
	bs := make([]store.ActionBegin, len(cmds))
	for i, c := range cmds {
		bs[i] = store.ActionBegin{Key: storageKey(e, step, c), Detail: c.Command}
	}
	as, errs := rec.beginAll(bs)
	for i := range as {
		if errs[i] != nil {
			e.log.Error("record storage action", "err", errs[i])
			continue
		}
		out[i] = &as[i]
	}
	return out
}

// storageCommand runs c and records its outcome; its action is recorded
// first, unless a is one already recorded.
func (e *exec) storageCommand(step store.Step, c config.StorageCommand, a *store.Action, rec *recorder, down *unreachableHosts) (cmdResult, error) {
	if a == nil {
		b, err := rec.begin(storageKey(e, step, c), c.Command)
		if err != nil {
			return cmdRecordFailed, fmt.Errorf("record action: %w", err)
		}
		a = &b
	}
	var out string
	err := down.get(c.Host)
	if err != nil {
		err = fmt.Errorf("not run: ssh %s failed earlier in this step: %w", c.Host, err)
	} else {
		var dialErr error
		out, dialErr, err = e.runStorage(c)
		if dialErr != nil && e.ctx.Err() == nil {
			down.set(c.Host, dialErr)
		}
	}
	if err != nil && e.ctx.Err() != nil {
		return cmdInterrupted, e.ctx.Err()
	}
	if err != nil {
		rec.finish(a.ID, store.ActionFailed, "", err.Error())
		return cmdFailed, err
	}
	rec.finish(a.ID, store.ActionSucceeded, firstLine(out), "")
	return cmdSucceeded, nil
}

// runStorage runs c on its host; dialErr is set (and err too) when no
// connection could be had.
func (e *exec) runStorage(c config.StorageCommand) (out string, dialErr, err error) {
	h, ok := e.r.cfg.Host(c.Host)
	if !ok {
		return "", nil, fmt.Errorf("host %s not configured", c.Host)
	}
	dialErr, err = e.onHost(h, true, func(conn HostConn) error {
		res, err := conn.Run(e.ctx, c.Command)
		out = res.Stdout
		return err
	})
	if dialErr != nil {
		return "", dialErr, fmt.Errorf("ssh %s: %w", c.Host, dialErr)
	}
	return out, nil, err
}

// unreachableHosts remembers, for one storage step, the hosts no SSH
// connection could be had to: their later commands fail at once instead of
// each waiting a connect timeout (an admin host that is down would cost six
// of them, one per Ceph flag, before any storage host is stopped). The
// hosts step dials them afresh.
type unreachableHosts struct {
	mu sync.Mutex
	m  map[string]error
}

func (u *unreachableHosts) get(host string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[host]
}

func (u *unreachableHosts) set(host string, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[string]error{}
	}
	u.m[host] = err
}

// onHost runs f on a connection to h: the job's pooled connection (opened
// in advance) when it has a pool, else a new one closed afterwards. If the
// connection turns out dead before f's command left (hostctl.ErrNoSession:
// nothing was sent), f runs once more on a fresh connection. keep says
// whether the connection may serve again (false after a power-off); one
// that failed other than by a command's exit status is never reused.
// dialErr is set when no connection could be had, err is f's error.
func (e *exec) onHost(h config.Host, keep bool, f func(HostConn) error) (dialErr, err error) {
	if e.pool == nil {
		conn, err := e.r.deps.DialHost(e.ctx, h)
		if err != nil {
			return err, nil
		}
		defer conn.Close()
		return nil, f(conn)
	}
	for attempt := 0; ; attempt++ {
		s, err := e.pool.SSHConn(h)
		if err != nil {
			return err, nil
		}
		err = f(s.Conn())
		var exit *ssh.ExitError
		switch {
		case err != nil && errors.Is(err, hostctl.ErrNoSession) && attempt == 0 && e.ctx.Err() == nil:
			e.pool.DropSSH(h.Name, s)
			e.event(store.LevelWarn, fmt.Sprintf("host %s: SSH connection lost before the command was sent; dialling again", h.Name), err.Error())
			continue
		case !keep, err != nil && !errors.As(err, &exit):
			e.pool.DropSSH(h.Name, s)
		}
		return nil, err
	}
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
