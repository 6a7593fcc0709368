package web

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

// Host power states on the overview. Unknown is the honest answer whenever
// the records do not say: an operator deciding whether a host is safe to
// touch must never read "Off" from a guess.
const (
	PowerOn      = "On"
	PowerOff     = "Off"
	PowerUnknown = "Unknown"
)

// powerLookback is how many recent jobs the overview reads for the hosts'
// last known power state; a host not named in any of them is Unknown.
const powerLookback = 20

// hostPower is one host's last known power state and where it comes from.
type hostPower struct {
	State  string
	Source string     // in words: which job, which record
	At     *time.Time // when that record was written
	JobID  int64      // 0: not from a job
}

// powerFrom reads what one job's records say about one host's power, from
// its host and BMC actions; ok is false when the job says nothing that
// decides it (a shutdown cancelled before its hosts step, a simulation
// still checking), and older jobs are asked instead.
//
//   - shutdown: "power-off" succeeded is Off (the BMC confirmed it, or the
//     host was already Off); failed is Unknown (not confirmed off); running
//     is Unknown (power-off in progress);
//   - simulation: the BMC check's power read ("session ok, power On", or
//     "power state is Off, expected On"), else a successful SSH login (On);
//   - startup (and any other kind): every host action succeeded is On, a
//     failure is Unknown.
func powerFrom(j store.Job, acts []store.Action) (hostPower, bool) {
	if len(acts) == 0 {
		return hostPower{}, false
	}
	src := fmt.Sprintf("%s job %d", j.Kind, j.ID)
	p := hostPower{JobID: j.ID}
	find := func(kind store.TargetKind, op store.Operation) *store.Action {
		for i := range acts {
			if acts[i].TargetKind == kind && acts[i].Operation == op {
				return &acts[i]
			}
		}
		return nil
	}
	decided := func(state, why string, a *store.Action) (hostPower, bool) {
		p.State, p.Source = state, src+": "+why
		if a != nil {
			p.At = a.FinishedAt
			if p.At == nil {
				p.At = a.StartedAt
			}
		}
		return p, true
	}
	switch j.Kind {
	case store.KindShutdown:
		a := find(store.TargetHost, store.OpPowerOff)
		switch {
		case a == nil:
			return hostPower{}, false
		case a.State == store.ActionSucceeded:
			return decided(PowerOff, cmpOr(a.Detail, "power-off confirmed"), a)
		case a.State == store.ActionFailed:
			return decided(PowerUnknown, "not confirmed off: "+a.Error, a)
		case a.State == store.ActionSkipped:
			return hostPower{}, false
		default:
			return decided(PowerUnknown, "power-off in progress", a)
		}
	case store.KindSimulation:
		return simulationPower(acts, find, decided)
	default:
		return startupPower(acts, decided)
	}
}

// simulationPower reads a simulation's BMC check, which reads the power
// state, then its SSH check.
func simulationPower(acts []store.Action, find func(store.TargetKind, store.Operation) *store.Action,
	decided func(state, why string, a *store.Action) (hostPower, bool)) (hostPower, bool) {
	b, s := find(store.TargetBMC, store.OpCheckBMC), find(store.TargetHost, store.OpCheckSSH)
	if b != nil && b.State == store.ActionSucceeded {
		return decided(PowerOn, "the BMC read On", b)
	}
	if b != nil && b.State == store.ActionFailed {
		// "power state is Off, expected On": the BMC answered, with Off.
		if rest, ok := strings.CutPrefix(b.Error, "power state is "); ok {
			if st, _, _ := strings.Cut(rest, ","); st == PowerOff || st == PowerOn {
				return decided(st, "the BMC read "+st, b)
			}
		}
	}
	if s != nil && s.State == store.ActionSucceeded {
		return decided(PowerOn, "answered SSH", s)
	}
	for _, a := range []*store.Action{b, s} {
		if a != nil && a.State == store.ActionFailed {
			return decided(PowerUnknown, string(a.Operation)+" failed: "+a.Error, a)
		}
	}
	return hostPower{}, false
}

// startupPower reads a startup's records of a host: the startup kind is
// coming; its host actions bring a host up, so a host
// whose actions all succeeded is On.
func startupPower(acts []store.Action, decided func(state, why string, a *store.Action) (hostPower, bool)) (hostPower, bool) {
	// The host's power-on action (runner/startup_hosts.go) is the verdict:
	// SSH answered or not, whatever its BMC said on the way.
	for i := range acts {
		if a := &acts[i]; a.TargetKind == "host" && a.Operation == "power-on" {
			switch {
			case a.State == store.ActionSucceeded:
				return decided(PowerOn, cmpOr(a.Detail, "back up"), a)
			case a.State == store.ActionFailed:
				return decided(PowerUnknown, "not back: "+a.Error, a)
			case !a.State.Final():
				return decided(PowerUnknown, "power-on in progress", a)
			}
		}
	}
	last := &acts[len(acts)-1]
	for i := range acts {
		a := &acts[i]
		switch {
		case a.State == store.ActionFailed:
			return decided(PowerUnknown, string(a.Operation)+" failed: "+a.Error, a)
		case !a.State.Final():
			return decided(PowerUnknown, "power-on in progress", a)
		}
	}
	return decided(PowerOn, "back up ("+string(last.Operation)+" succeeded)", last)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// hostPowers returns every configured host's last known power state, from
// the most recent job whose records decide it. The self host is On: it
// runs this service.
func (w *Web) hostPowers(ctx context.Context) (map[string]hostPower, error) {
	out := make(map[string]hostPower, len(w.hosts))
	open := 0
	for _, h := range w.hosts {
		if h.Self {
			out[h.Name] = hostPower{State: PowerOn, Source: "this machine runs shutdownd"}
			continue
		}
		open++
	}
	if open == 0 {
		return out, nil
	}
	jobs, err := w.store.ListJobs(ctx, store.JobFilter{Limit: powerLookback})
	if err != nil {
		return nil, fmt.Errorf("list recent jobs: %w", err)
	}
	for _, j := range jobs {
		recs, err := w.hostRecords(ctx, j.ID)
		if err != nil {
			return nil, err
		}
		for name, acts := range recs {
			if _, done := out[name]; done {
				continue
			}
			if p, ok := powerFrom(j, acts); ok {
				out[name] = p
				open--
			}
		}
		if open <= 0 {
			break
		}
	}
	return out, nil
}

// hostRecords reads a job's host and BMC actions by host. The OpenStack
// step holds only VM actions (thousands of them): it is not read.
func (w *Web) hostRecords(ctx context.Context, jobID int64) (map[string][]store.Action, error) {
	steps, err := w.store.Steps(ctx, jobID)
	if err != nil {
		return nil, fmt.Errorf("read steps of job %d: %w", jobID, err)
	}
	by := map[string][]store.Action{}
	for _, s := range steps {
		if s.Name == "openstack" {
			continue
		}
		acts, err := w.store.StepActions(ctx, s.ID)
		if err != nil {
			return nil, fmt.Errorf("read actions of job %d: %w", jobID, err)
		}
		for _, a := range acts {
			if a.TargetKind == store.TargetHost || a.TargetKind == store.TargetBMC {
				by[a.Target] = append(by[a.Target], a)
			}
		}
	}
	return by, nil
}

// roleHosts is one role's hosts on the overview.
type roleHosts struct {
	Role  string
	Hosts []hostView
}

type hostView struct {
	config.Host
	hostPower
}

// byRole groups the configured hosts by role, in shutdown order (compute,
// storage, control), file order within a role.
func byRole(hosts []config.Host, power map[string]hostPower) []roleHosts {
	var out []roleHosts
	for _, role := range config.Roles {
		g := roleHosts{Role: role}
		for _, h := range hosts {
			if h.Role != role {
				continue
			}
			p, ok := power[h.Name]
			if !ok {
				p = hostPower{State: PowerUnknown, Source: fmt.Sprintf("no record in the last %d jobs", powerLookback)}
			}
			g.Hosts = append(g.Hosts, hostView{Host: h, hostPower: p})
		}
		if len(g.Hosts) > 0 {
			out = append(out, g)
		}
	}
	return out
}
