package runner

import (
	"testing"
	"time"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/store"
)

func forecastConfig() *config.Config {
	ssh := config.SSH{ConnectTimeout: 2 * time.Second, CommandTimeout: 10 * time.Second}
	bmc := &config.BMC{Protocol: "redfish"}
	return &config.Config{
		OpenStack: config.OpenStack{Cloud: "edge", StopTimeout: 5 * time.Minute, RequestTimeout: 30 * time.Second},
		Storage: config.Storage{Type: "commands", Commands: []config.StorageCommand{
			{Host: "storage-01", Command: "stop a"}, {Host: "storage-01", Command: "stop b"}}},
		Timeouts: config.Timeouts{HostOff: time.Minute, BMCSoftOff: 30 * time.Second, BMCHardOff: 30 * time.Second},
		Hosts: []config.Host{
			{Name: "compute-01", Role: "compute", SSH: ssh, BMC: bmc},
			{Name: "compute-02", Role: "compute", SSH: ssh, BMC: bmc},
			{Name: "storage-01", Role: "storage", SSH: ssh},
			{Name: "mgmt", Role: "control", SSH: ssh, Self: true},
		},
	}
}

// TestForecastModel checks the estimate's rules: never measured means the
// worst case, measured VM time scales up (not down) with the VMs to stop,
// hosts of a group count as the slowest, and nothing exceeds the worst case.
func TestForecastModel(t *testing.T) {
	t.Parallel()
	cfg := forecastConfig()
	// Worst cases: openstack 5m+2*30s = 6m; storage 2*(2s+10s) = 24s;
	// hosts: compute group 2+10+60+30+30 = 132s, storage group 72s (no BMC).
	worst := 6*time.Minute + 24*time.Second + 132*time.Second + 72*time.Second
	now := time.Date(2025, 6, 24, 7, 0, 0, 0, time.UTC)

	none := store.Measurements{VMsToStop: -1}
	f := forecast(cfg, none, now)
	if f.Estimate != worst || f.WorstCase != worst {
		t.Errorf("nothing measured: estimate %s worst %s, want both %s", f.Estimate, f.WorstCase, worst)
	}
	for _, s := range f.Steps {
		if s.Basis != store.BasisTimeouts {
			t.Errorf("nothing measured: %s basis %s", s.Name, s.Basis)
		}
	}

	m := store.Measurements{
		VMsToStop: 40, SimulationJobID: 3,
		Steps:           map[string]store.StepMeasure{StepOpenStack: {JobID: 2, Duration: 20 * time.Second, Stopped: 20}},
		Hosts:           map[string]time.Duration{"compute-01": 10 * time.Second, "compute-02": 25 * time.Second},
		StorageCommands: map[string]time.Duration{"storage-01\x00stop a": 3 * time.Second},
	}
	f = forecast(cfg, m, now)
	want := map[string]struct {
		est   time.Duration
		basis string
	}{
		StepOpenStack: {40 * time.Second, store.BasisMeasured},             // 20 s for 20 VMs, 40 to stop now
		StepStorage:   {3*time.Second + 12*time.Second, store.BasisMixed},  // one measured, one worst case
		StepHosts:     {25*time.Second + 72*time.Second, store.BasisMixed}, // slowest compute + unmeasured storage host
	}
	var sum time.Duration
	for _, s := range f.Steps {
		w := want[s.Name]
		if s.Estimate != w.est || s.Basis != w.basis {
			t.Errorf("%s: %s %s, want %s %s (%s)", s.Name, s.Estimate, s.Basis, w.est, w.basis, s.Detail)
		}
		sum += s.Estimate
	}
	if f.Estimate != sum || f.VMsToStop != 40 || f.SimulationJobID != 3 {
		t.Errorf("forecast %+v", f)
	}

	// Fewer VMs than measured: not scaled down. Far more: capped.
	m.VMsToStop = 5
	if s := forecast(cfg, m, now).Steps[0]; s.Estimate != 20*time.Second {
		t.Errorf("fewer VMs: %s, want the measured 20s", s.Estimate)
	}
	m.VMsToStop = 10000
	if s := forecast(cfg, m, now).Steps[0]; s.Estimate != 6*time.Minute {
		t.Errorf("many VMs: %s, want the worst case 6m", s.Estimate)
	}

	// Nothing configured: skipped steps, zero.
	bare := &config.Config{}
	f = forecast(bare, none, now)
	for _, s := range f.Steps {
		if s.Basis != store.BasisSkipped || s.Estimate != 0 {
			t.Errorf("bare site: %+v", s)
		}
	}
}
