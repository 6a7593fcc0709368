package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// The store already keeps what a forecast needs: every step and every target
// action has started_at and finished_at, for simulations and shutdowns
// alike. This file reads those durations back; the runner turns them into
// an estimate with the site's configuration (runner.Forecast).

// Forecast is an estimate of how long a shutdown would take now. Durations
// are in seconds in the API; here they are time.Duration.
type Forecast struct {
	// Estimate is the expected duration from measurements, falling back to
	// WorstCase for a step never measured.
	Estimate time.Duration
	// WorstCase is what the configured timeouts allow at most.
	WorstCase time.Duration
	// VMsToStop is what the last simulation found ACTIVE or ERROR (and not
	// excluded); -1 when no simulation has listed the servers yet.
	VMsToStop int
	// SimulationJobID is the simulation the counts come from (0: none).
	SimulationJobID int64
	SimulatedAt     *time.Time
	Steps           []StepForecast
	ComputedAt      time.Time
}

// StepForecast is the estimate of one step.
type StepForecast struct {
	Name      string
	Estimate  time.Duration
	WorstCase time.Duration
	// Basis says where Estimate comes from: "measured", "timeouts" (never
	// measured, the configured timeouts) or "skipped" (nothing to do).
	Basis  string
	Detail string
}

// Forecast bases.
const (
	BasisMeasured = "measured"
	BasisTimeouts = "timeouts"
	BasisMixed    = "mixed" // some targets measured, timeouts for the others
	BasisSkipped  = "skipped"
)

// StepMeasure is one past run of a step in a shutdown.
type StepMeasure struct {
	JobID    int64
	Duration time.Duration
	// Stopped is, for the openstack step, how many VMs the shutdown stopped
	// (os-stop sent and SHUTOFF confirmed).
	Stopped int
}

// Measurements are the durations measured in earlier jobs.
type Measurements struct {
	// VMsToStop from the latest simulation whose openstack check
	// succeeded; -1 when there is none.
	VMsToStop       int
	SimulationJobID int64
	SimulatedAt     *time.Time
	// Steps by name, from the latest shutdown in which the step ran to an
	// end (succeeded or failed, not skipped or cancelled).
	Steps map[string]StepMeasure
	// Hosts: duration of each host's power-off (SSH command to confirmed
	// Off), from the latest shutdown that powered it off.
	Hosts map[string]time.Duration
	// StorageCommands: duration of each storage command, keyed
	// host + "\x00" + command, from the latest shutdown that ran it.
	StorageCommands map[string]time.Duration
}

// simSummary matches the detail the runner writes for a successful
// openstack check ("60 servers (ACTIVE 40, SHUTOFF 20): 40 to stop, ...").
var simSummary = regexp.MustCompile(`^(\d+) servers \(.*\): (\d+) to stop`)

// Measurements reads the durations of earlier jobs.
func (s *Store) Measurements(ctx context.Context) (Measurements, error) {
	m := Measurements{VMsToStop: -1, Steps: map[string]StepMeasure{}, Hosts: map[string]time.Duration{}, StorageCommands: map[string]time.Duration{}}
	if err := s.measureSimulation(ctx, &m); err != nil {
		return m, err
	}
	if err := s.measureSteps(ctx, &m); err != nil {
		return m, err
	}
	if err := s.measureTargets(ctx, &m); err != nil {
		return m, err
	}
	return m, nil
}

// measureSimulation reads the VMs to stop from the latest simulation whose
// openstack check succeeded.
func (s *Store) measureSimulation(ctx context.Context, m *Measurements) error {
	var (
		jobID    int64
		detail   string
		finished sql.NullString
	)
	err := s.r.QueryRowContext(ctx, `SELECT s.job_id, s.detail, s.finished_at FROM steps s JOIN jobs j ON j.id = s.job_id
		WHERE j.kind = 'simulation' AND s.name = 'openstack' AND s.state = 'succeeded'
		ORDER BY s.job_id DESC LIMIT 1`).Scan(&jobID, &detail, &finished)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read last simulation: %w", err)
	default:
		if g := simSummary.FindStringSubmatch(detail); g != nil {
			m.VMsToStop, _ = strconv.Atoi(g[2])
			m.SimulationJobID = jobID
			if m.SimulatedAt, err = parseNullTime(finished); err != nil {
				return err
			}
		}
	}
	return nil
}

// measureSteps reads each step's duration from the latest shutdown in
// which it ran to an end, with the VMs that step stopped.
func (s *Store) measureSteps(ctx context.Context, m *Measurements) error {
	rows, err := s.r.QueryContext(ctx, `SELECT s.job_id, s.name, s.started_at, s.finished_at,
			(SELECT count(*) FROM actions a WHERE a.step_id = s.id AND a.target_kind = 'vm' AND a.operation = 'os-stop'
				AND a.state = 'succeeded' AND a.attempts > 0 AND a.detail NOT LIKE 'already SHUTOFF%')
		FROM steps s JOIN jobs j ON j.id = s.job_id
		WHERE j.kind = 'shutdown' AND s.state IN ('succeeded', 'failed') AND s.started_at IS NOT NULL
		ORDER BY s.job_id ASC`)
	if err != nil {
		return fmt.Errorf("read step durations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			sm      StepMeasure
			name    string
			st, fin sql.NullString
		)
		if err := rows.Scan(&sm.JobID, &name, &st, &fin, &sm.Stopped); err != nil {
			return fmt.Errorf("read step durations: %w", err)
		}
		d, ok, err := span(st, fin)
		if err != nil {
			return err
		}
		if ok {
			sm.Duration = d
			m.Steps[name] = sm // ascending: the latest wins
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read step durations: %w", err)
	}
	return nil
}

// measureTargets reads each host's power-off and each storage command's
// duration from the latest shutdown that ran it to success.
func (s *Store) measureTargets(ctx context.Context, m *Measurements) error {
	arows, err := s.r.QueryContext(ctx, `SELECT a.target_kind, a.target, a.target_id, a.started_at, a.finished_at
		FROM actions a JOIN jobs j ON j.id = a.job_id
		WHERE j.kind = 'shutdown' AND a.state = 'succeeded' AND a.started_at IS NOT NULL
			AND ((a.target_kind = 'host' AND a.operation = 'power-off') OR a.target_kind = 'storage')
		ORDER BY a.id ASC`)
	if err != nil {
		return fmt.Errorf("read target durations: %w", err)
	}
	defer arows.Close()
	for arows.Next() {
		var (
			kind, target, targetID string
			st, fin                sql.NullString
		)
		if err := arows.Scan(&kind, &target, &targetID, &st, &fin); err != nil {
			return fmt.Errorf("read target durations: %w", err)
		}
		d, ok, err := span(st, fin)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if kind == "host" {
			m.Hosts[target] = d
		} else {
			m.StorageCommands[target+"\x00"+targetID] = d
		}
	}
	if err := arows.Err(); err != nil {
		return fmt.Errorf("read target durations: %w", err)
	}
	return nil
}

func span(start, end sql.NullString) (time.Duration, bool, error) {
	if !start.Valid || !end.Valid {
		return 0, false, nil
	}
	a, err := parseTime(start.String)
	if err != nil {
		return 0, false, err
	}
	b, err := parseTime(end.String)
	if err != nil {
		return 0, false, err
	}
	return max(b.Sub(a), 0), true, nil
}

// SetOnTrack records whether a job with a deadline is on track. It writes
// (and wakes subscribers) only on a change, since the runner re-evaluates
// after every step.
func (s *Store) SetOnTrack(ctx context.Context, id int64, onTrack bool) (changed bool, err error) {
	err = s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		res, err := tx.ExecContext(ctx, `UPDATE jobs SET on_track = ? WHERE id = ? AND deadline IS NOT NULL
			AND (on_track IS NULL OR on_track <> ?)`, onTrack, id, onTrack)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		changed = n > 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("set on_track of job %d: %w", id, err)
	}
	return changed, nil
}
