package sitesim

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// TestNovaStartWaitsForComputeService: os-start is accepted while the
// server's nova-compute service is down, as current Nova accepts it, and
// the server stays in powering-on until the service is back; os-services
// tells the client which hosts are down.
func TestNovaStartWaitsForComputeService(t *testing.T) {
	t.Parallel()
	n := novaStart(t, NovaOptions{Password: "pw", VMs: []VM{
		{ID: "vm-a", Name: "a", Host: "compute-01", Status: "SHUTOFF", StopDelay: 20 * time.Millisecond},
		{ID: "vm-b", Name: "b", Host: "compute-02", Status: "ACTIVE", StopDelay: 20 * time.Millisecond},
	}})
	tok := novaLogin(t, n)
	services := func() map[string]string {
		r := novaDo(t, "GET", n.URL()+"/compute/v2.1/os-services?binary=nova-compute", tok, nil)
		if r.code != http.StatusOK {
			t.Fatalf("os-services: %d %s", r.code, r.raw)
		}
		out := map[string]string{}
		for _, s := range r.body["services"].([]any) {
			m := s.(map[string]any)
			out[m["host"].(string)] = m["state"].(string)
		}
		return out
	}
	if got := services(); got["compute-01"] != "up" || got["compute-02"] != "up" {
		t.Fatalf("services %v, want both up", got)
	}
	n.SetComputeService("compute-01", false)
	if got := services(); got["compute-01"] != "down" || got["compute-02"] != "up" {
		t.Fatalf("services %v, want compute-01 down", got)
	}
	if r := novaDo(t, "GET", n.URL()+"/compute/v2.1/os-services?binary=nova-scheduler", tok, nil); len(r.body["services"].([]any)) != 0 {
		t.Errorf("binary filter ignored: %s", r.raw)
	}

	start := func(id string) int {
		return novaDo(t, "POST", n.URL()+"/compute/v2.1/servers/"+id+"/action", tok, map[string]any{"os-start": nil}).code
	}
	if c := start("vm-a"); c != http.StatusAccepted {
		t.Fatalf("os-start with compute down: %d, want 202", c)
	}
	if ts := n.TaskState("vm-a"); ts != "powering-on" || n.Status("vm-a") != "SHUTOFF" {
		t.Fatalf("after os-start with compute down: %s/%q, want SHUTOFF/powering-on", n.Status("vm-a"), ts)
	}
	if c := start("vm-a"); c != http.StatusConflict {
		t.Errorf("second os-start while powering-on: %d, want 409", c)
	}
	if c := start("vm-b"); c != http.StatusConflict {
		t.Errorf("os-start of an ACTIVE server: %d, want 409", c)
	}
	// The start waits for the service, however long.
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n.Status("vm-a") != "SHUTOFF" {
			t.Fatalf("vm-a became %s with its compute service down", n.Status("vm-a"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	n.SetComputeService("compute-01", true)
	novaWaitFor(t, "vm-a ACTIVE", func() bool { return n.Status("vm-a") == "ACTIVE" && n.TaskState("vm-a") == "" })
	if n.StartRequestsFor("vm-a") != 2 || n.ActiveAt("vm-a").IsZero() {
		t.Errorf("start requests %d, active at %v", n.StartRequestsFor("vm-a"), n.ActiveAt("vm-a"))
	}
}

// siteSSH runs one command on a site host as the site's configuration
// would, with its key and known_hosts.
func siteSSH(t *testing.T, s *Site, host, cmd string) string {
	t.Helper()
	key, err := os.ReadFile(s.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := knownhosts.New(s.KnownHostsFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", s.Host(host).SSH.Addr(), &ssh.ClientConfig{
		User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hk, Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh %s: %v", host, err)
	}
	defer c.Close()
	return sshRun(t, c, cmd).stdout
}

func startSite(t *testing.T, opts Options) *Site {
	t.Helper()
	opts.Dir = t.TempDir()
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestSiteBootAndCeph: a host powered on through its BMC answers SSH only
// after its boot delay; its nova-compute service follows; its OSDs come up
// only after ceph.target is started; and while nodown is set, OSDs whose
// daemons stopped still read up, as on a real cluster.
func TestSiteBootAndCeph(t *testing.T) {
	t.Parallel()
	s := startSite(t, Options{
		Hosts:     []HostSpec{{Name: "compute-01", Role: "compute"}, {Name: "storage-01", Role: "storage"}, {Name: "storage-02", Role: "storage"}},
		BootDelay: 300 * time.Millisecond, OSDStartDelay: 100 * time.Millisecond, VMsPerProject: 1, Projects: []string{"p"},
	})
	osdUp := func() (total, up int) {
		var st struct{ NumOSDs, NumUpOSDs int }
		out := siteSSH(t, s, "storage-01", "ceph osd stat -f json")
		var raw map[string]int
		if err := json.Unmarshal([]byte(out), &raw); err != nil {
			t.Fatalf("osd stat %q: %v", out, err)
		}
		st.NumOSDs, st.NumUpOSDs = raw["num_osds"], raw["num_up_osds"]
		return st.NumOSDs, st.NumUpOSDs
	}
	if total, up := osdUp(); total != 2*OSDsPerHost || up != total {
		t.Fatalf("healthy cluster: %d/%d up", up, total)
	}
	siteSSH(t, s, "storage-01", "ceph osd set nodown")
	siteSSH(t, s, "storage-02", "systemctl stop ceph.target")
	st2 := s.Host("storage-02")
	st2.Machine.SetState(PowerOff, "test")
	if _, up := osdUp(); up != 2*OSDsPerHost {
		t.Errorf("with nodown set, stopped OSDs read %d up, want all %d", up, 2*OSDsPerHost)
	}
	siteSSH(t, s, "storage-01", "ceph osd unset nodown")
	if _, up := osdUp(); up != OSDsPerHost {
		t.Errorf("nodown unset: %d up, want %d", up, OSDsPerHost)
	}
	if got := siteSSH(t, s, "storage-01", "ceph health"); got != "HEALTH_WARN 6 osds down\n" {
		t.Errorf("health %q", got)
	}

	// Power on through the BMC: On at once, SSH only after the boot.
	c := newRFClient(t, st2.BMC)
	c.login("admin", BMCPassword())
	if resp, _ := c.do(http.MethodPost, rfReset, map[string]string{"ResetType": "On"}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("power on: %d", resp.StatusCode)
	}
	if st2.Machine.State() != PowerOn || st2.Machine.Ready() || !sshRefused(st2.SSH.Addr()) {
		t.Fatalf("just powered on: state %s ready %v; ssh should refuse while booting", st2.Machine.State(), st2.Machine.Ready())
	}
	sshWaitFor(t, "storage-02 booted", func() bool { return !sshRefused(st2.SSH.Addr()) })
	if _, up := osdUp(); up != OSDsPerHost {
		t.Errorf("booted without ceph.target started: %d up, want %d", up, OSDsPerHost)
	}
	siteSSH(t, s, "storage-02", "systemctl start ceph.target")
	sshWaitFor(t, "every OSD up", func() bool { _, up := osdUp(); return up == 2*OSDsPerHost })

	// A compute host's service follows its machine.
	c1 := s.Host("compute-01").Machine
	c1.SetState(PowerOff, "test")
	if s.Nova.ComputeServiceUp("compute-01") {
		t.Error("compute-01 off, its nova-compute still up")
	}
	c1.SetState(PowerOn, "test")
	if s.Nova.ComputeServiceUp("compute-01") {
		t.Error("compute-01 booting, its nova-compute already up")
	}
	sshWaitFor(t, "compute-01 nova-compute up", func() bool { return s.Nova.ComputeServiceUp("compute-01") })
}
