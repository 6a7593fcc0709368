package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// KindStartup is the job that brings the site back after a shutdown: hosts
// on in reverse order, storage unfrozen, and exactly the VMs that shutdown
// stopped started again.
const KindStartup Kind = "startup"

// ErrNoShutdown is returned by CreateStartup when there is no shutdown job
// to restore (none ever ran, or the job named is not a shutdown); the API
// answers 409 with the reason.
var ErrNoShutdown = errors.New("no shutdown to restore")

// CreateStartup creates a pending startup job that restores shutdown job
// shutdownID, or the latest shutdown when shutdownID is 0. It returns
// ErrJobRunning while any job is active (the unique index decides, as for a
// simulation) and ErrNoShutdown when there is nothing to restore. A running
// shutdown is active too, so a startup can never restore a shutdown that is
// still powering the site off.
func (s *Store) CreateStartup(ctx context.Context, nj NewJob, shutdownID int64) (Job, error) {
	nj.Kind = KindStartup
	var job Job
	err := s.update(ctx, true, func(tx *sql.Tx, now time.Time) error {
		active, err := activeJob(ctx, tx)
		if err != nil {
			return err
		}
		if active != nil {
			return ErrJobRunning
		}
		if nj.RestoresJob, err = shutdownToRestore(ctx, tx, shutdownID); err != nil {
			return err
		}
		if job, err = insertJob(ctx, tx, nj, s.bootID(), now); err != nil {
			return err
		}
		return addEvent(ctx, tx, job.ID, now, "info", fmt.Sprintf("restores shutdown job %d", nj.RestoresJob), "")
	})
	if err != nil {
		return Job{}, fmt.Errorf("create startup: %w", err)
	}
	return job, nil
}

// shutdownToRestore returns id when it is a shutdown job, or the latest
// shutdown when id is 0.
func shutdownToRestore(ctx context.Context, tx *sql.Tx, id int64) (int64, error) {
	if id == 0 {
		err := tx.QueryRowContext(ctx, `SELECT id FROM jobs WHERE kind = 'shutdown' ORDER BY id DESC LIMIT 1`).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("%w: no shutdown job has ever run", ErrNoShutdown)
		}
		if err != nil {
			return 0, fmt.Errorf("read latest shutdown: %w", err)
		}
		return id, nil
	}
	var kind Kind
	err := tx.QueryRowContext(ctx, `SELECT kind FROM jobs WHERE id = ?`, id).Scan(&kind)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w: job %d does not exist", ErrNoShutdown, id)
	}
	if err != nil {
		return 0, fmt.Errorf("read job %d: %w", id, err)
	}
	if kind != KindShutdown {
		return 0, fmt.Errorf("%w: job %d is a %s, not a shutdown", ErrNoShutdown, id, kind)
	}
	return id, nil
}

// RestoredShutdown returns the shutdown job that startup job id restores,
// or ErrNotFound when id is not a startup.
func (s *Store) RestoredShutdown(ctx context.Context, id int64) (int64, error) {
	var restores sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT restores_job FROM jobs WHERE id = ?`, id).Scan(&restores)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && !restores.Valid) {
		return 0, fmt.Errorf("startup job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("read startup job %d: %w", id, err)
	}
	return restores.Int64, nil
}

// StoppedVM is a VM that a shutdown stopped: its os-stop was sent and the
// VM was seen SHUTOFF.
type StoppedVM struct {
	ID, Name string
}

// StoppedVMs returns the VMs whose os-stop shutdown job id recorded as
// succeeded, which a startup starts again. VMs that were SHUTOFF before
// the shutdown came are recorded succeeded too, with the detail "already
// SHUTOFF" (runner/vms.go): they are left out, so a VM that was off before
// the outage stays off after it. Deleted VMs are left in: the startup finds
// them gone and records them skipped.
func (s *Store) StoppedVMs(ctx context.Context, id int64) ([]StoppedVM, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT target_id, target FROM actions
		WHERE job_id = ? AND target_kind = 'vm' AND operation = 'os-stop' AND state = 'succeeded'
		AND detail <> 'already SHUTOFF' ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("read vms stopped by job %d: %w", id, err)
	}
	defer rows.Close()
	var out []StoppedVM
	for rows.Next() {
		var v StoppedVM
		if err := rows.Scan(&v.ID, &v.Name); err != nil {
			return nil, fmt.Errorf("read vms stopped by job %d: %w", id, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read vms stopped by job %d: %w", id, err)
	}
	return out, nil
}

// Operations of a startup (runner/startup*.go), as stored in
// actions.operation.
const (
	OpPowerOn       Operation = "power-on"        // a host, from its power-on to SSH answering
	OpBMCPowerState Operation = "bmc-power-state" // the power state read before deciding
	OpBMCPowerOn    Operation = "bmc-power-on"    // the BMC power-on request
	OpCephWaitOSDs  Operation = "ceph-wait-osds"  // waiting until every OSD is up
	OpComputeWait   Operation = "compute-wait"    // waiting for Keystone, Nova and nova-compute
	OpOSStart       Operation = "os-start"        // one VM
)

// PartOfPowerOn reports whether o is a step on the way to a host's
// power-on, whose failure the host's own power-on action (SSH back or not)
// decides, as PartOfPowerOff does for a power-off: a BMC that did not
// answer for a host that came back by itself is not a failure of the job.
func (o Operation) PartOfPowerOn() bool {
	return o == OpBMCPowerState || o == OpBMCPowerOn
}
