package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// postStartup asks the service to bring the site back, with a token of the
// startup scope, and returns the job id from the Location header.
func (r *crashRig) postStartup(p *svcProc, token string) int64 {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.addr+"/startup", strings.NewReader(`{"reason":"mains back"}`))
	req.Header.Set("auth-token", token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("POST /startup: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		r.t.Fatalf("POST /startup: %d %s", resp.StatusCode, body)
	}
	var id int64
	if _, err := fmt.Sscanf(resp.Header.Get("Location"), "/jobs/%d", &id); err != nil {
		r.t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	return id
}

// waitJob waits until job id reaches a final state in the store and
// returns it.
func (r *crashRig) waitJob(id int64, within time.Duration) string {
	r.t.Helper()
	db := r.watchDB()
	defer db.Close()
	deadline := time.Now().Add(within)
	for {
		switch st := jobState(r.t, db, id); st {
		case "succeeded", "failed", "cancelled":
			return st
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("job %d not final after %s", id, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCrashSIGKILLDuringStartupResumesWithoutASecondPowerOn: the real
// binary is killed with SIGKILL while a startup powers the hosts on, and
// started again at once. The same job resumes (same boot, within
// resume_window) and completes, and no host's BMC is ever sent a second
// power-on: a host the BMC reads On is not powered on again.
func TestCrashSIGKILLDuringStartupResumesWithoutASecondPowerOn(t *testing.T) {
	r := newCrashRig(t)
	ctx := context.Background()
	st, err := store.Open(ctx, r.db)
	if err != nil {
		t.Fatal(err)
	}
	opsToken, err := store.NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, "ops", store.HashToken(opsToken), []string{"read", "startup"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	p := startService(t, r.cfg)
	if got := r.waitJob(r.postShutdown(p), 90*time.Second); got != "succeeded" {
		t.Fatalf("shutdown %s:\n%s", got, p.log)
	}
	// The hosts boot slowly enough for the kill to land inside the host
	// step, after some power-ons were sent and before the job ends.
	for _, h := range r.site.Hosts {
		h.Machine.SetBootDelay(700 * time.Millisecond)
	}
	id := r.postStartup(p, opsToken)
	storage := r.site.Host("storage-01").Machine
	deadline := time.Now().Add(60 * time.Second)
	for storage.State() != sitesim.PowerOn {
		if time.Now().After(deadline) {
			t.Fatalf("storage-01 never powered on:\n%s", p.log)
		}
		time.Sleep(2 * time.Millisecond)
	}
	p.kill(t)
	p2 := startService(t, r.cfg)
	if got := r.waitJob(id, 120*time.Second); got != "succeeded" {
		t.Fatalf("resumed startup %s:\n%s\n%s", got, p.log, p2.log)
	}

	db := r.watchDB()
	defer db.Close()
	if n := count(t, db, `SELECT count(*) FROM events WHERE job_id = ? AND message = 'job resumed after restart'`, id); n != 1 {
		t.Errorf("%d 'job resumed after restart' events, want 1", n)
	}
	if n := count(t, db, `SELECT count(*) FROM jobs WHERE kind = 'startup'`); n != 1 {
		t.Errorf("%d startup jobs, want the one resumed", n)
	}
	for _, h := range r.site.Hosts {
		ons := 0
		for _, rt := range h.BMC.Resets() {
			if rt == "On" || rt == "ForceOn" {
				ons++
			}
		}
		if ons != 1 || !h.Machine.Ready() {
			t.Errorf("%s: %d power-ons (resets %v), ready %v; want exactly one, and back", h.Spec.Name, ons, h.BMC.Resets(), h.Machine.Ready())
		}
	}
	for _, v := range r.vms {
		got := r.site.Nova.Status(v.ID)
		wasOn := v.Status == "ACTIVE" || v.Status == "ERROR"
		if wasOn && got != "ACTIVE" || !wasOn && got != v.Status {
			t.Errorf("%s: was %s, now %s", v.Name, v.Status, got)
		}
		if n := r.site.Nova.StartRequestsFor(v.ID); wasOn && n != 1 || !wasOn && n != 0 {
			t.Errorf("%s (was %s): %d os-start", v.Name, v.Status, n)
		}
	}
	if flags := r.site.Ceph.Flags(); len(flags) != 0 || slices.Contains(flags, "noout") {
		t.Errorf("ceph flags left set: %v", flags)
	}
}
