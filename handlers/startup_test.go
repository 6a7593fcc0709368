package handlers

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// TestStartupEndpoint: POST /startup needs the startup scope (a shutdown
// token does not have it), answers 409 with a clear message while there is
// nothing to restore, 202 + Location with a startup restoring the latest
// shutdown (or the one named), 409 job_running while a job runs, and
// GET /startup/status reads it.
func TestStartupEndpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	read, _, shut := e.tokens()
	up := e.token("ops-startup", []string{ScopeStartup, ScopeRead}, nil, nil)
	ctx := context.Background()

	resp, body := e.do(req{method: "POST", path: "/startup", token: shut})
	wantError(t, resp, body, 403, CodeScopeNotGranted)
	resp, body = e.do(req{method: "POST", path: "/startup", token: up})
	if msg := wantError(t, resp, body, 409, CodeNoShutdown); !strings.Contains(msg, "no shutdown job has ever run") {
		t.Errorf("no-shutdown message %q", msg)
	}
	_, body = e.do(req{method: "GET", path: "/startup/status", token: read})
	if want := `{"data":{"running":false,"start_time":null},"error":null,"status":"success"}`; string(body) != want {
		t.Fatalf("status before any startup: %s", body)
	}

	var shutdowns []int64
	for range 2 {
		sd, _, err := e.st.CreateShutdown(ctx, store.NewJob{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.FinishJob(ctx, sd.ID, store.StateSucceeded, ""); err != nil {
			t.Fatal(err)
		}
		shutdowns = append(shutdowns, sd.ID)
	}
	resp, body = e.do(req{method: "POST", path: "/startup", token: up, body: `{"shutdown_job": "soon"}`})
	wantError(t, resp, body, 400, CodeInvalidRequest)
	resp, body = e.do(req{method: "POST", path: "/startup", token: up, body: fmt.Sprintf(`{"shutdown_job": %d}`, shutdowns[0]+100)})
	wantError(t, resp, body, 409, CodeNoShutdown)

	kicks := e.kicks.n.Load()
	resp, body = e.do(req{method: "POST", path: "/startup", token: up, body: fmt.Sprintf(`{"shutdown_job": %d, "reason": "mains back"}`, shutdowns[0])})
	if resp.StatusCode != 202 || string(body) != acceptedBody {
		t.Fatalf("startup: %d %s", resp.StatusCode, body)
	}
	id := jobIDFromLocation(t, resp)
	job, err := e.st.Job(ctx, id)
	if err != nil || job.Kind != store.KindStartup || job.Reason != "mains back" || job.TokenName != "ops-startup" {
		t.Fatalf("job %+v, %v", job, err)
	}
	if got, _ := e.st.RestoredShutdown(ctx, id); got != shutdowns[0] {
		t.Errorf("restores %d, want the named %d", got, shutdowns[0])
	}
	if e.kicks.n.Load() == kicks {
		t.Error("the runner was not told")
	}
	events, err := e.st.Events(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		if strings.HasPrefix(ev.Message, WarningPrefix) {
			t.Errorf("a well-formed body left a warning: %s", ev.Message)
		}
	}
	resp, body = e.do(req{method: "POST", path: "/startup", token: up})
	wantError(t, resp, body, 409, CodeJobRunning)
	_, body = e.do(req{method: "GET", path: "/startup/status", token: read})
	if !strings.Contains(string(body), `"running":true`) || !strings.Contains(string(body), fmt.Sprintf(`"job_id":%d`, id)) {
		t.Errorf("startup status: %s", body)
	}
	resp, body = e.do(req{method: "GET", path: "/jobs?kind=startup", token: read})
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"kind":"startup"`) {
		t.Errorf("jobs?kind=startup: %d %s", resp.StatusCode, body)
	}
	// Cancelling a startup takes the startup scope.
	resp, body = e.do(req{method: "POST", path: fmt.Sprintf("/jobs/%d/cancel", id), token: shut})
	wantError(t, resp, body, 403, CodeScopeNotGranted)
	if resp, body = e.do(req{method: "POST", path: fmt.Sprintf("/jobs/%d/cancel", id), token: up}); resp.StatusCode != 202 {
		t.Errorf("cancel with the startup scope: %d %s", resp.StatusCode, body)
	}
}
