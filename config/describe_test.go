package config

import (
	"bytes"
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	c, _ := loadFull(t)
	var buf bytes.Buffer
	c.Describe(&buf)
	out := buf.String()
	assertNoSecret(t, "Describe", out)
	if strings.Contains(out, "T0k3n") {
		t.Errorf("Describe shows the webhook path, which may hold a token:\n%s", out)
	}
	// The storage step prints exactly Storage.Plan, in order.
	last := -1
	for _, cmd := range c.Storage.Plan() {
		line := "on " + cmd.Host + " as " + c.sshUser(cmd.Host) + ": " + cmd.Command
		i := strings.Index(out[last+1:], line)
		if i < 0 {
			t.Fatalf("Describe lacks %q after offset %d:\n%s", line, last, out)
		}
		last += 1 + i
	}
	for _, want := range []string{
		`cloud "edge"`, "8 at a time", "never stopped: router-vm, 0f1e2d3c",
		"on storage-01 as ops: ceph osd set pause",
		"on storage-02 as root: systemctl stop ceph.target",
		"simulation health check on storage-01: ceph health",
		"BMC ipmi 10.0.1.11:6230 as admin",
		"BMC redfish bmc-storage-02.example:443 as admin, timeout 30s",
		"BMC ipmi 10.0.1.11:6230 as admin, timeout 10s",
		"then, on all storage hosts at once:",
		`"sudo systemctl poweroff"`,
		"compute-02 has no BMC: its power-off cannot be confirmed or forced",
		"storage-02: BMC certificate is not verified",
		"webhook https://hooks.example.com (signed with $SHUTDOWND_TEST_HOOK)",
		"wait up to 2m for the BMC",
		"resumes only on the same boot of this machine and within 15m of its last record",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Describe lacks %q:\n%s", want, out)
		}
	}
	// Groups in role order, the self host last.
	order := []string{"group 1 (compute)", "compute-01", "compute-02", "group 2 (storage)", "storage-01", "storage-02", "last:", "mgmt-01"}
	host := out[strings.Index(out, "Step 3"):]
	pos := 0
	for _, s := range order {
		i := strings.Index(host[pos:], s)
		if i < 0 {
			t.Fatalf("Step 3 lacks %q after offset %d:\n%s", s, pos, host)
		}
		pos += i + len(s)
	}
}

func TestDescribeWithoutOpenStackAndStorage(t *testing.T) {
	dir := site(t)
	c, err := parseIn(t, dir, base)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.Describe(&buf)
	out := buf.String()
	for _, want := range []string{
		"Step 1: OpenStack VMs: skipped (no openstack section)",
		"Step 2: Storage: skipped (type none)",
		"no host is marked self",
		"c1 has no BMC",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Describe lacks %q:\n%s", want, out)
		}
	}
}
