package bmc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chassisScript is ipmi_sim's chassis_control program. ipmi_sim runs it as
// "SCRIPT get power" and "SCRIPT set power 0|1" / "SCRIPT set shutdown 1";
// it only reads and writes files next to itself, so the simulated chassis
// can never touch the machine running the test.
const chassisScript = `#!/bin/sh
dir=$(dirname "$0")
case "$1" in
get) echo "power:$(cat "$dir/power")" ;;
set) shift
  while [ $# -ge 2 ]; do
    echo "$1 $2" >> "$dir/ops.log"
    case "$1" in
      power) echo "$2" > "$dir/power" ;;
      shutdown) echo 0 > "$dir/power" ;;
    esac
    shift 2
  done ;;
esac
`

const ipmiEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`

// ipmiSim is a running OpenIPMI ipmi_sim on 127.0.0.1 whose chassis power
// lives in files of a temporary directory.
type ipmiSim struct {
	dir  string
	port int
}

func (s *ipmiSim) power(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "power"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (s *ipmiSim) setPower(t *testing.T, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.dir, "power"), []byte(v+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *ipmiSim) ops(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dir, "ops.log"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func startIPMISim(t *testing.T, user, pass string) *ipmiSim {
	t.Helper()
	sim, err := exec.LookPath("ipmi_sim")
	_, err2 := exec.LookPath("ipmitool")
	if err != nil || err2 != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("ipmi_sim or ipmitool missing under CI (install openipmi and ipmitool): %v %v", err, err2)
		}
		t.Skip("ipmi_sim or ipmitool not installed (Debian packages openipmi, ipmitool)")
	}
	dir := t.TempDir()
	// ipmi_sim needs a fixed UDP port in its config: take a free one.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()

	script := filepath.Join(dir, "chassis.sh")
	conf := fmt.Sprintf(`name "sitesim-ipmi"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid a123456789abcdefa123456789abcdef
  endlan
  user 2 true "%s" "%s" admin 10 md5
  chassis_control "%s"
`, port, user, pass, script)
	files := map[string]string{"chassis.sh": chassisScript, "lan.conf": conf, "sim.emu": ipmiEmu, "power": "1\n"}
	for name, body := range files {
		mode := os.FileMode(0o600)
		if name == "chassis.sh" {
			mode = 0o700
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, sim, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", state, "-n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel() // kills our ipmi_sim (by its pid) ...
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("ipmi_sim output:\n%s", out.String())
		}
	})
	return &ipmiSim{dir: dir, port: port}
}

// openIPMI opens through our package, retrying while ipmi_sim starts up.
func openIPMI(t *testing.T, s *ipmiSim, user, pass string) *Client {
	t.Helper()
	tg := Target{Name: "storage-01", Address: "127.0.0.1", Port: s.port, Protocol: ProtocolIPMI,
		User: user, Password: pass, Timeout: 10 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := Open(context.Background(), tg)
		if err == nil {
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("open ipmi: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestIPMIPowerThroughIpmitool(t *testing.T) {
	t.Parallel()
	const pass = "Ipmi-Secret-9"
	s := startIPMISim(t, "admin", pass)
	c := openIPMI(t, s, "admin", pass)
	ctx := context.Background()

	if st, err := c.PowerState(ctx); err != nil || st != On {
		t.Fatalf("PowerState = %q, %v; want On", st, err)
	}
	if err := c.SoftOff(ctx); err != nil {
		t.Fatalf("SoftOff: %v", err)
	}
	if ops := s.ops(t); len(ops) != 1 || ops[0] != "shutdown 1" {
		t.Fatalf("chassis operations after SoftOff: %q, want [shutdown 1]", ops)
	}
	if st, err := c.PowerState(ctx); err != nil || st != Off {
		t.Fatalf("PowerState after soft off = %q, %v; want Off", st, err)
	}

	s.setPower(t, "1") // the host came back on by itself
	if err := c.HardOff(ctx); err != nil {
		t.Fatalf("HardOff: %v", err)
	}
	if ops := s.ops(t); len(ops) != 2 || ops[1] != "power 0" {
		t.Fatalf("chassis operations after HardOff: %q, want [... power 0]", ops)
	}
	if s.power(t) != "0" {
		t.Fatal("HardOff returned but the chassis is on")
	}
	if st, err := c.PowerState(ctx); err != nil || st != Off {
		t.Fatalf("PowerState after hard off = %q, %v; want Off", st, err)
	}

	// Wrong password: refused, and the error keeps it secret.
	bad := Target{Name: "storage-01", Address: "127.0.0.1", Port: s.port, Protocol: ProtocolIPMI,
		User: "admin", Password: "Wr0ng-Ipmi-Pass", Timeout: 10 * time.Second}
	_, err := Open(ctx, bad)
	if err == nil {
		t.Fatal("ipmi open with a wrong password succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, bad.Password) || strings.Contains(msg, pass) ||
		!strings.Contains(msg, "storage-01") || !strings.Contains(msg, "ipmi") {
		t.Fatalf("wrong-password error: %s", msg)
	}
}
