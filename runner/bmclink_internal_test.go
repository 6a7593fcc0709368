package runner

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/edgeops/shutdownd/runner/bmc"
	"github.com/edgeops/shutdownd/sitesim"
)

// endSessions logs every Redfish session out from the BMC's side, as a BMC
// does when a session has been idle too long.
func endSessions(t *testing.T, b *sitesim.RedfishBMC) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: b.CertPool()}}}
	do := func(method, path string) *http.Response {
		req, err := http.NewRequest(method, b.URL()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("admin", sitesim.BMCPassword())
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := do("GET", "/redfish/v1/SessionService/Sessions")
	var list struct {
		Members []struct {
			ID string `json:"@odata.id"`
		}
	}
	err := json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Members {
		resp := do("DELETE", m.ID)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if n := b.ActiveSessions(); n != 0 {
		t.Fatalf("%d sessions still open on the BMC", n)
	}
}

// A BMC session opened in advance that the BMC has since ended is replaced
// by a new one on its first read; a session that already answered is not
// (its errors are the BMC's answer, for the confirmation loop to judge).
func TestWarmBMCSessionEndedByTheBMCIsReopened(t *testing.T) {
	site, cfg, st, e := internalExec(t, sitesim.Options{
		Projects: []string{"a"}, Hosts: []sitesim.HostSpec{{Name: "compute-01", Role: "compute"}}, Storage: "none",
	})
	r, ctx := e.r, e.ctx
	h, sim := cfg.Hosts[0], site.Hosts[0].BMC

	ctl, err := r.deps.OpenBMC(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	link := &bmcLink{e: e, h: h, ctl: ctl, warm: true}
	endSessions(t, sim)
	ps, err := link.PowerState(ctx)
	if err != nil || ps != bmc.On {
		t.Fatalf("read over an ended warm session = %s, %v; want On through a new session", ps, err)
	}
	if n := sim.ActiveSessions(); n != 1 {
		t.Errorf("%d sessions on the BMC, want the one new session", n)
	}
	events, err := st.Events(ctx, e.job.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range events {
		found = found || ev.Message == "host compute-01: BMC session opened in advance no longer answers; opened a new one"
	}
	if !found {
		t.Errorf("no event about the replaced session in %+v", events)
	}

	// Proven now: the next failure is reported, not papered over.
	endSessions(t, sim)
	if _, err := link.PowerState(ctx); err == nil {
		t.Error("read over an ended session that had already answered succeeded; want its error")
	}
	if n := sim.ActiveSessions(); n != 0 {
		t.Errorf("%d sessions opened behind the caller's back", n)
	}
	link.Close(ctx)
}
