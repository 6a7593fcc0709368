package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// e2eService is the real service (Main) against a simulated site, both
// in-process, the service on a loopback port.
type e2eService struct {
	t     *testing.T
	main  *Main
	demo  *demoSetup
	token string
	url   string
}

// e2eFast tunes the demo site so a whole shutdown takes a few seconds.
func e2eFast(o *sitesim.Options) {
	o.VMStopMin, o.VMStopMax = 20*time.Millisecond, 300*time.Millisecond
	o.PowerOffDelay = 150 * time.Millisecond
	o.SoftOffDelay = 150 * time.Millisecond
	o.SSHLatency = 0
	o.PollInterval = 100 * time.Millisecond
	o.HostOff, o.BMCSoftOff, o.BMCHardOff = 2*time.Second, 2*time.Second, 2*time.Second
	o.BMCPollEvery = 50 * time.Millisecond
}

func startE2E(t *testing.T, tune func(*sitesim.Options)) *e2eService {
	t.Helper()
	ctx := context.Background()
	d, err := startDemo(ctx, "127.0.0.1:0", "", func(o *sitesim.Options) {
		e2eFast(o)
		if tune != nil {
			tune(o)
		}
	})
	if err != nil {
		t.Fatalf("start demo site: %v", err)
	}
	t.Cleanup(d.Close)
	m := &Main{Config: d.Config, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := m.Run(ctx); err != nil {
		t.Fatalf("run service: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	tok, err := createDemoToken(ctx, m.Store)
	if err != nil {
		t.Fatal(err)
	}
	return &e2eService{t: t, main: m, demo: d, token: tok, url: m.URL()}
}

// do sends a request with the all-scopes token (unless hdr overrides it)
// and returns status, headers and body.
func (s *e2eService) do(method, path, body string, hdr map[string]string) (int, http.Header, string) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("auth-token", s.token)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// waitIdle waits until job id is final and returns it.
func (s *e2eService) waitJob(id int64, within time.Duration) store.Job {
	s.t.Helper()
	ch, cancel := s.main.Store.Subscribe()
	defer cancel()
	deadline := time.After(within)
	for {
		j, err := s.main.Store.Job(context.Background(), id)
		if err != nil {
			s.t.Fatal(err)
		}
		if j.State.Final() {
			return j
		}
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			s.t.Fatalf("job %d still %s after %s (step %q)", id, j.State, within, j.CurrentStep)
		}
	}
}

func (s *e2eService) post(path, body string) int64 {
	s.t.Helper()
	code, h, b := s.do("POST", path, body, nil)
	if code != http.StatusAccepted {
		s.t.Fatalf("POST %s = %d %s", path, code, b)
	}
	var id int64
	if _, err := fmt.Sscanf(h.Get("Location"), "/jobs/%d", &id); err != nil {
		s.t.Fatalf("Location %q: %v", h.Get("Location"), err)
	}
	return id
}

type e2eEnvelope struct {
	Data   json.RawMessage `json:"data"`
	Error  *string         `json:"error"`
	Code   string          `json:"code"`
	Status string          `json:"status"`
}

func TestE2ESpecCurlWalkthrough(t *testing.T) {
	s := startE2E(t, nil)

	// Before any job: exactly {"running": false, "start_time": null}.
	for _, p := range []string{"/simulate/status", "/shutdown/status"} {
		code, _, body := s.do("GET", p, "", nil)
		if want := `{"data":{"running":false,"start_time":null},"error":null,"status":"success"}`; code != 200 || strings.TrimSpace(body) != want {
			t.Fatalf("GET %s = %d %s, want 200 %s", p, code, body, want)
		}
	}

	code, h, body := s.do("POST", "/simulate", "", nil)
	if want := `{"data":"We've got your request","error":null,"status":"success"}`; code != 202 || strings.TrimSpace(body) != want {
		t.Fatalf("POST /simulate = %d %s", code, body)
	}
	if loc := h.Get("Location"); !strings.HasPrefix(loc, "/jobs/") {
		t.Fatalf("Location = %q", loc)
	}
	// A second simulation while one runs: 409 job_running. The demo
	// simulation takes a few hundred ms, so it is still pending or running.
	code, _, body = s.do("POST", "/simulate", `{"reason":"again"}`, nil)
	if code != http.StatusConflict || !strings.Contains(body, `"code":"job_running"`) {
		t.Fatalf("second POST /simulate = %d %s, want 409 job_running", code, body)
	}
	// While it runs, the status says so, in the documented shape.
	code, _, body = s.do("GET", "/simulate/status", "", nil)
	var env e2eEnvelope
	if err := json.Unmarshal([]byte(body), &env); err != nil || code != 200 || env.Status != "success" || env.Error != nil {
		t.Fatalf("status = %d %s (%v)", code, body, err)
	}
	var st map[string]any
	json.Unmarshal(env.Data, &st)
	if _, err := time.Parse("2006-01-02T15:04:05.000000", st["start_time"].(string)); err != nil {
		t.Fatalf("start_time %v: %v", st["start_time"], err)
	}
	j := s.waitJob(1, 30*time.Second)
	if j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	code, _, body = s.do("GET", "/simulate/status", "", nil)
	if code != 200 || !strings.HasPrefix(body, `{"data":{"running":false,"start_time":"`) || strings.Contains(body, `"error":"`) || strings.Contains(body, "current_step") {
		t.Fatalf("final status = %d %s", code, body)
	}

	// Authentication and scopes.
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		code               int
		errCode            string
	}{
		{"missing token", "POST", "/simulate", map[string]string{"auth-token": ""}, 401, "missing_api_token"},
		{"unknown token", "GET", "/shutdown/status", map[string]string{"auth-token": "sdt_nope"}, 403, "invalid_api_token"},
		{"unknown bearer", "GET", "/shutdown/status", map[string]string{"auth-token": "", "Authorization": "Bearer sdt_nope"}, 403, "invalid_api_token"},
		{"unknown path", "GET", "/nope", nil, 404, "not_found"},
		{"wrong method", "DELETE", "/simulate", nil, 405, "method_not_allowed"},
	}
	readTok := e2eToken(t, s, "reader", "read")
	cases = append(cases, struct {
		name, method, path string
		hdr                map[string]string
		code               int
		errCode            string
	}{"unscoped token", "POST", "/shutdown", map[string]string{"auth-token": readTok}, 403, "scope_not_granted"})
	// (A bad body is no error: it starts the job, with a warning; see
	// handlers: TestTriggerBodiesNeverRefused.)
	for _, c := range cases {
		code, h, b := s.do(c.method, c.path, "", c.hdr)
		if code != c.code || !strings.Contains(b, `"code":"`+c.errCode+`"`) || !strings.Contains(b, `"status":"error"`) || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %s %s = %d %s, want %d %s", c.name, c.method, c.path, code, b, c.code, c.errCode)
		}
	}
	// Nothing of the above created a job.
	jobs, _ := s.main.Store.ListJobs(context.Background(), store.JobFilter{})
	if len(jobs) != 1 {
		t.Fatalf("jobs = %d, want 1", len(jobs))
	}

	// Bearer works for reads; /jobs and /jobs/{id} answer in the envelope.
	code, _, body = s.do("GET", "/jobs?kind=simulation", "", map[string]string{"auth-token": "", "Authorization": "Bearer " + readTok})
	if code != 200 || !strings.Contains(body, `"kind":"simulation"`) {
		t.Fatalf("GET /jobs = %d %s", code, body)
	}
	code, _, body = s.do("GET", "/jobs/1", "", nil)
	if code != 200 || !strings.Contains(body, `"steps":[`) || !strings.Contains(body, `"actions":[`) || !strings.Contains(body, `"events":[`) {
		t.Fatalf("GET /jobs/1 = %d %.300s", code, body)
	}
	code, _, body = s.do("GET", "/healthz", "", map[string]string{"auth-token": ""})
	if code != 200 || !strings.Contains(body, `"status":"success"`) {
		t.Fatalf("healthz = %d %s", code, body)
	}
}

// e2eToken creates a token with the given scopes and returns its secret.
func e2eToken(t *testing.T, s *e2eService, name string, scopes ...string) string {
	t.Helper()
	secret, err := store.NewTokenSecret()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.main.Store.CreateToken(context.Background(), name, store.HashToken(secret), scopes, nil, nil); err != nil {
		t.Fatal(err)
	}
	return secret
}

func TestE2ESimulationChangesNothing(t *testing.T) {
	s := startE2E(t, nil)
	id := s.post("/simulate", `{"reason":"monthly test"}`)
	j := s.waitJob(id, 30*time.Second)
	if j.State != store.StateSucceeded {
		t.Fatalf("simulation %s: %s", j.State, j.Error)
	}
	site := s.demo.Site
	if n := site.Nova.StopRequests(); n != 0 {
		t.Errorf("Nova saw %d os-stop requests during a simulation", n)
	}
	for _, h := range site.Hosts {
		if n := h.SSH.PowerCommands(); n != 0 {
			t.Errorf("host %s received %d power commands", h.Spec.Name, n)
		}
		if h.SSH.Logins() == 0 {
			t.Errorf("host %s was never logged in to: the simulation did not check it", h.Spec.Name)
		}
		if f := h.SSH.CephFlags(); len(f) != 0 || h.SSH.CephStopped() {
			t.Errorf("host %s: ceph flags %v stopped %v", h.Spec.Name, f, h.SSH.CephStopped())
		}
		if h.Machine.State() != sitesim.PowerOn {
			t.Errorf("host %s is %s", h.Spec.Name, h.Machine.State())
		}
		if r := h.BMC.Resets(); len(r) != 0 {
			t.Errorf("bmc %s got resets %v", h.Spec.Name, r)
		}
		if h.BMC.PowerReads() == 0 {
			t.Errorf("bmc %s power state never read", h.Spec.Name)
		}
	}
	actions, _ := s.main.Store.Actions(context.Background(), id)
	var bmcChecks, sshChecks int
	for _, a := range actions {
		if a.State != store.ActionSucceeded {
			t.Errorf("action %s %s %s: %s %s", a.TargetKind, a.Target, a.Operation, a.State, a.Error)
		}
		switch a.Operation {
		case "check-bmc":
			bmcChecks++
		case "check-ssh":
			sshChecks++
		}
	}
	if bmcChecks != 6 || sshChecks != 6 {
		t.Errorf("checks: %d bmc, %d ssh; want 6 each", bmcChecks, sshChecks)
	}
}

func TestE2EShutdownTakesTheSiteDownInOrder(t *testing.T) {
	s := startE2E(t, nil)
	site := s.demo.Site
	var mustStop []string
	for _, vm := range site.Nova.Servers() {
		if vm.Status == "" || vm.Status == "ACTIVE" || vm.Status == "ERROR" {
			mustStop = append(mustStop, vm.ID)
		}
	}
	id := s.post("/shutdown", `{"reason":"utility power lost","expected_recovery":"2030-01-01T12:00:00Z"}`)
	j := s.waitJob(id, 60*time.Second)
	if j.State != store.StateSucceeded {
		t.Fatalf("shutdown %s: %s", j.State, j.Error)
	}
	// Every ACTIVE and ERROR VM is SHUTOFF, each stopped once.
	var lastVMOff time.Time
	for _, vmID := range mustStop {
		if st := site.Nova.Status(vmID); st != "SHUTOFF" {
			t.Errorf("vm %s is %s", vmID, st)
		}
		if n := site.Nova.StopRequestsFor(vmID); n != 1 {
			t.Errorf("vm %s got %d os-stop", vmID, n)
		}
	}
	if len(mustStop) < 50 {
		t.Fatalf("only %d VMs to stop: demo site too small for this test", len(mustStop))
	}
	actions, _ := s.main.Store.Actions(context.Background(), id)
	for _, a := range actions {
		if a.TargetKind == "vm" && a.FinishedAt != nil && a.FinishedAt.After(lastVMOff) {
			lastVMOff = *a.FinishedAt
		}
	}
	// Ceph flags set on the admin host, ceph stopped on both storage hosts,
	// after the VMs were off.
	admin := site.Host("storage-01")
	if got, want := admin.SSH.CephFlags(), []string{"noout", "norecover", "norebalance", "nobackfill", "nodown", "pause"}; !slices.Equal(got, want) {
		t.Errorf("ceph flags = %v, want %v", got, want)
	}
	for _, name := range []string{"storage-01", "storage-02"} {
		h := site.Host(name)
		if !h.SSH.CephStopped() {
			t.Errorf("%s: ceph.target not stopped", name)
		}
		for _, c := range h.SSH.Commands() {
			if strings.Contains(c.Line, "ceph") && c.At.Before(lastVMOff) {
				t.Errorf("%s: %q at %s, before the last VM was off (%s)", name, c.Line, c.At, lastVMOff)
			}
		}
	}
	// Every host Off, in role order: each compute before each storage
	// before the control host.
	order := map[string]int{"compute": 0, "storage": 1, "control": 2}
	for _, a := range site.Hosts {
		if a.Machine.State() != sitesim.PowerOff {
			t.Errorf("host %s is %s", a.Spec.Name, a.Machine.State())
			continue
		}
		if n := a.SSH.PowerCommands(); n != 1 {
			t.Errorf("host %s got %d power commands", a.Spec.Name, n)
		}
		for _, b := range site.Hosts {
			if order[a.Spec.Role] < order[b.Spec.Role] && !a.Machine.OffAt().Before(firstPowerCommand(b)) {
				t.Errorf("%s (%s) went off at %s, after %s (%s) was told to power off", a.Spec.Name, a.Spec.Role, a.Machine.OffAt(), b.Spec.Name, b.Spec.Role)
			}
		}
	}
	code, _, body := s.do("GET", "/shutdown/status", "", nil)
	if code != 200 || !strings.HasPrefix(body, `{"data":{"running":false,"start_time":"`) || strings.Contains(body, `"error":"`) {
		t.Fatalf("status after shutdown = %d %s", code, body)
	}
	if j.Reason != "utility power lost" || j.TokenName != "demo" || j.ExpectedRecovery == nil {
		t.Errorf("job who/why not stored: %+v", j)
	}
}

func firstPowerCommand(h *sitesim.SiteHost) time.Time {
	for _, c := range h.SSH.Commands() {
		if strings.Contains(c.Line, "poweroff") {
			return c.At
		}
	}
	return time.Now().Add(time.Hour)
}

func TestE2EHostWithoutSSHIsPoweredOffThroughItsBMCAndStubbornHostIsEscalated(t *testing.T) {
	s := startE2E(t, func(o *sitesim.Options) {
		o.Projects, o.VMsPerProject = []string{"p"}, 3
		for i := range o.Hosts {
			switch o.Hosts[i].Name {
			case "compute-02":
				o.Hosts[i].SSHDown = true
			case "compute-03":
				// Accepts the power-off command and stays on, and ignores
				// the BMC's graceful shutdown too: only hard off works.
				o.Hosts[i].IgnorePowerOff = true
				o.Hosts[i].IgnoreSoftOff = true
			}
		}
		o.HostOff, o.BMCSoftOff = 500*time.Millisecond, 500*time.Millisecond
	})
	id := s.post("/shutdown", "")
	j := s.waitJob(id, 60*time.Second)
	if j.State != store.StateSucceeded {
		t.Fatalf("shutdown %s: %s", j.State, j.Error)
	}
	site := s.demo.Site
	for _, h := range site.Hosts {
		if h.Machine.State() != sitesim.PowerOff {
			t.Errorf("host %s is %s", h.Spec.Name, h.Machine.State())
		}
	}
	if r := site.Host("compute-02").BMC.Resets(); !slices.Equal(r, []string{"GracefulShutdown"}) {
		t.Errorf("compute-02 (no SSH) resets = %v, want [GracefulShutdown]", r)
	}
	if r := site.Host("compute-03").BMC.Resets(); !slices.Equal(r, []string{"GracefulShutdown", "ForceOff"}) {
		t.Errorf("compute-03 (stubborn) resets = %v, want [GracefulShutdown ForceOff]", r)
	}
	if c := site.Host("compute-03").SSH.PowerCommands(); c != 1 {
		t.Errorf("compute-03 got %d power commands, want 1", c)
	}
	if r := site.Host("compute-01").BMC.Resets(); len(r) != 0 {
		t.Errorf("compute-01 (healthy) resets = %v", r)
	}
	// The store says how each host went down.
	actions, _ := s.main.Store.Actions(context.Background(), id)
	got := map[string]string{}
	for _, a := range actions {
		if a.TargetKind == "host" || a.TargetKind == "bmc" {
			got[a.Target+" "+string(a.Operation)] = string(a.State) + " " + a.Detail + a.Error
		}
	}
	expect := map[string]string{
		"compute-02 ssh-poweroff":         "failed",
		"compute-02 bmc-soft-off":         "succeeded",
		"compute-02 power-off":            "succeeded off via BMC soft off",
		"compute-03 ssh-poweroff":         "succeeded",
		"compute-03 bmc-confirm-off":      "failed",
		"compute-03 bmc-soft-off":         "succeeded",
		"compute-03 bmc-confirm-soft-off": "failed",
		"compute-03 bmc-hard-off":         "succeeded",
		"compute-03 bmc-confirm-hard-off": "succeeded",
		"compute-03 power-off":            "succeeded off via BMC hard off",
		"compute-01 power-off":            "succeeded off via SSH",
	}
	for k, v := range expect {
		if !strings.HasPrefix(got[k], v) {
			t.Errorf("%s = %q, want prefix %q", k, got[k], v)
		}
	}
}

func TestE2EHundredConcurrentSimulationsStartOneJob(t *testing.T) {
	s := startE2E(t, nil)
	var wg sync.WaitGroup
	codes := make(chan int, 100)
	start := make(chan struct{})
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("POST", s.url+"/simulate", nil)
			req.Header.Set("auth-token", s.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	close(start)
	wg.Wait()
	close(codes)
	n := map[int]int{}
	for c := range codes {
		n[c]++
	}
	if n[202] != 1 || n[409] != 99 {
		t.Fatalf("answers = %v, want one 202 and 99 409", n)
	}
	jobs, _ := s.main.Store.ListJobs(context.Background(), store.JobFilter{})
	if len(jobs) != 1 {
		t.Fatalf("%d jobs in the store, want 1", len(jobs))
	}
}

func TestE2EShutdownPreemptsRunningSimulation(t *testing.T) {
	s := startE2E(t, func(o *sitesim.Options) {
		// Slow SSH answers keep the simulation running long enough.
		o.SSHLatency = 300 * time.Millisecond
	})
	sim := s.post("/simulate", "")
	shut := s.post("/shutdown", `{"reason":"battery low"}`)
	if shut == sim {
		t.Fatal("shutdown reused the simulation's job")
	}
	sj := s.waitJob(sim, 10*time.Second)
	if sj.State != store.StateCancelled || !strings.Contains(sj.Error, "preempted") {
		t.Fatalf("simulation = %s %q, want cancelled/preempted", sj.State, sj.Error)
	}
	// A second POST /shutdown while it runs points at the same job.
	code, h, _ := s.do("POST", "/shutdown", "", nil)
	if code != 202 || h.Get("Location") != fmt.Sprintf("/jobs/%d", shut) {
		t.Fatalf("second shutdown = %d %s", code, h.Get("Location"))
	}
	j := s.waitJob(shut, 60*time.Second)
	if j.State != store.StateSucceeded {
		t.Fatalf("shutdown %s: %s", j.State, j.Error)
	}
	code, _, body := s.do("GET", "/simulate/status", "", nil)
	if code != 200 || !strings.Contains(body, "preempted") {
		t.Fatalf("simulate status = %s", body)
	}
}

// TestE2EShutdownRequestedAgainWhileThisMachinePowersOff: once the shutdown
// has sent the power-off of the machine shutdownd runs on, a UPS that
// retries POST /shutdown gets 202 for that job and no new job is created
// (it would be left running by the dying machine and resumed at the next
// start-up, against a site brought back up by hand); a simulation is
// refused with 503.
func TestE2EShutdownRequestedAgainWhileThisMachinePowersOff(t *testing.T) {
	svc := startE2E(t, func(o *sitesim.Options) {
		o.Hosts = append(sitesim.DefaultHosts(), sitesim.HostSpec{Name: "mgmt-01", Role: "control", Self: true})
	})
	code, hdr, body := svc.do("POST", "/shutdown", "", nil)
	if code != http.StatusAccepted || hdr.Get("Location") != "/jobs/1" {
		t.Fatalf("POST /shutdown: %d %s %s", code, hdr.Get("Location"), body)
	}
	if j := svc.waitJob(1, time.Minute); j.State != store.StateSucceeded {
		t.Fatalf("job 1 %s: %s", j.State, j.Error)
	}
	self := svc.demo.Site.Host("mgmt-01").SSH
	deadline := time.Now().Add(30 * time.Second)
	for self.PowerCommands() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if self.PowerCommands() != 1 {
		t.Fatalf("self host got %d power-off commands", self.PowerCommands())
	}
	code, hdr, body = svc.do("POST", "/shutdown", `{"reason":"UPS retry"}`, nil)
	if code != http.StatusAccepted || hdr.Get("Location") != "/jobs/1" {
		t.Errorf("POST /shutdown while this machine powers off: %d %q %s; want 202 for job 1", code, hdr.Get("Location"), body)
	}
	code, _, body = svc.do("POST", "/simulate", "", nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"service_unavailable"`) {
		t.Errorf("POST /simulate while this machine powers off: %d %s; want 503", code, body)
	}
	jobs, err := svc.main.Store.ListJobs(context.Background(), store.JobFilter{})
	if err != nil || len(jobs) != 1 {
		t.Errorf("%d jobs (%v); want only job 1", len(jobs), err)
	}
}
