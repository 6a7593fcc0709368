package notify

import (
	"strconv"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// Payload is the JSON body of every notification (docs/notifications.md).
// It is built once per message; retries send the same bytes, so a receiver
// can deduplicate on delivery_id.
type Payload struct {
	Event      string       `json:"event"` // job.started, step.finished, job.finished
	DeliveryID string       `json:"delivery_id"`
	OccurredAt string       `json:"occurred_at"`
	Job        JobPayload   `json:"job"`
	Step       *StepPayload `json:"step,omitempty"` // step.finished only
}

// JobPayload is the job as notified: who asked, why, when it is expected
// back, and where it stands.
type JobPayload struct {
	ID               int64   `json:"id"`
	Kind             string  `json:"kind"`
	State            string  `json:"state"`
	Reason           string  `json:"reason"`
	ExpectedRecovery *string `json:"expected_recovery"`
	Deadline         *string `json:"deadline"`
	OnTrack          *bool   `json:"on_track"`
	TokenName        string  `json:"token_name"`
	CurrentStep      string  `json:"current_step"`
	Error            string  `json:"error"`
	CreatedAt        string  `json:"created_at"`
	StartedAt        *string `json:"started_at"`
	FinishedAt       *string `json:"finished_at"`
	URL              string  `json:"url"` // path of the job in the API, e.g. /jobs/7
}

// StepPayload is the step that just ended.
type StepPayload struct {
	Seq        int     `json:"seq"`
	Name       string  `json:"name"`
	State      string  `json:"state"`
	Detail     string  `json:"detail"`
	Error      string  `json:"error"`
	StartedAt  *string `json:"started_at"`
	FinishedAt *string `json:"finished_at"`
}

// ts and tsPtr give webhook timestamps the API's form.
var (
	ts    = store.FormatTime
	tsPtr = store.FormatTimePtr
)

func newPayload(id, event string, now time.Time, j store.Job, s *store.Step) Payload {
	p := Payload{
		Event:      event,
		DeliveryID: id,
		OccurredAt: ts(now),
		Job: JobPayload{
			ID: j.ID, Kind: string(j.Kind), State: string(j.State), Reason: j.Reason,
			ExpectedRecovery: tsPtr(j.ExpectedRecovery), Deadline: tsPtr(j.Deadline), OnTrack: j.OnTrack,
			TokenName: j.TokenName, CurrentStep: j.CurrentStep, Error: j.Error,
			CreatedAt: ts(j.CreatedAt), StartedAt: tsPtr(j.StartedAt), FinishedAt: tsPtr(j.FinishedAt),
			URL: "/jobs/" + strconv.FormatInt(j.ID, 10),
		},
	}
	if s != nil {
		p.Step = &StepPayload{Seq: s.Seq, Name: s.Name, State: string(s.State), Detail: s.Detail, Error: s.Error,
			StartedAt: tsPtr(s.StartedAt), FinishedAt: tsPtr(s.FinishedAt)}
	}
	return p
}
