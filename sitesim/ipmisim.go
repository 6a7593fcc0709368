package sitesim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ipmiChassisScript is ipmi_sim's chassis_control program. ipmi_sim runs it
// as "SCRIPT get power" and "SCRIPT set power 0|1" / "SCRIPT set shutdown 1".
// It only reads and writes files it is given (the power file, shared with a
// paired SSHD, and files next to itself), so the simulated chassis can never
// touch the machine running the test. A soft shutdown is ignored (recorded
// only) while the file ignore-soft exists: a hung OS.
const ipmiChassisScript = `#!/bin/sh
dir=$(dirname "$0")
power=$(cat "$dir/power-file")
case "$1" in
get) echo "power:$(cat "$power")" ;;
set) shift
  while [ $# -ge 2 ]; do
    echo "$1 $2" >> "$dir/ops.log"
    case "$1" in
      power) echo "$2" > "$power" ;;
      shutdown) [ -e "$dir/ignore-soft" ] || echo 0 > "$power" ;;
    esac
    shift 2
  done ;;
esac
`

const ipmiEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`

// IPMISimOptions describe one simulated IPMI BMC.
type IPMISimOptions struct {
	// Dir receives ipmi_sim's configuration, the chassis script and its
	// operation log. Required; one directory per BMC.
	Dir string
	// User and Password are the only accepted credentials (admin, MD5).
	User, Password string
	// PowerFile is the host's power ("1"/"0"); pair the BMC with a host by
	// passing SSHD.PowerFile(), so a chassis power off takes its sshd down.
	// Dir/power (initially on) when empty.
	PowerFile string
	// IgnoreSoftOff: a soft shutdown is recorded and the chassis stays on.
	IgnoreSoftOff bool
}

// IPMISim is OpenIPMI's ipmi_sim serving IPMI over LAN (RMCP, UDP) on
// 127.0.0.1, so bmclib's ipmitool provider is exercised with the real
// ipmitool against a real BMC implementation.
type IPMISim struct {
	opts   IPMISimOptions
	port   int
	power  string
	out    *lockedBuffer
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartIPMISim starts ipmi_sim on a free UDP port and waits until it answers
// a Get Channel Authentication Capabilities request (a read-only ping).
func StartIPMISim(ctx context.Context, opts IPMISimOptions) (*IPMISim, error) {
	if opts.Dir == "" || opts.User == "" || opts.Password == "" {
		return nil, errors.New("start ipmi_sim: Dir, User and Password are required")
	}
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, fmt.Errorf("start ipmi_sim: %w: %v (Debian package openipmi)", ErrToolMissing, err)
	}
	if _, err := exec.LookPath("ipmitool"); err != nil {
		return nil, fmt.Errorf("start ipmi_sim: %w: ipmitool: %v (Debian package ipmitool)", ErrToolMissing, err)
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "state"), 0o700); err != nil {
		return nil, fmt.Errorf("start ipmi_sim: %w", err)
	}
	s := &IPMISim{opts: opts, power: opts.PowerFile, out: &lockedBuffer{}}
	if s.power == "" {
		s.power = filepath.Join(opts.Dir, "power")
		if err := os.WriteFile(s.power, []byte("1\n"), 0o600); err != nil {
			return nil, fmt.Errorf("start ipmi_sim: %w", err)
		}
	}
	files := map[string]string{"chassis.sh": ipmiChassisScript, "sim.emu": ipmiEmu, "power-file": s.power + "\n"}
	if opts.IgnoreSoftOff {
		files["ignore-soft"] = ""
	}
	for name, body := range files {
		mode := os.FileMode(0o600)
		if name == "chassis.sh" {
			mode = 0o700
		}
		if err := os.WriteFile(filepath.Join(opts.Dir, name), []byte(body), mode); err != nil {
			return nil, fmt.Errorf("start ipmi_sim: %w", err)
		}
	}
	var lastErr error
	for range 3 { // a free port can be taken between our probe and ipmi_sim's bind
		if lastErr = s.launch(ctx, bin); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("start ipmi_sim: %w\n%s", lastErr, s.out.String())
}

func (s *IPMISim) launch(ctx context.Context, bin string) error {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("find free udp port: %w", err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
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
`, port, s.opts.User, s.opts.Password, filepath.Join(s.opts.Dir, "chassis.sh"))
	confPath := filepath.Join(s.opts.Dir, "lan.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("write lan.conf: %w", err)
	}
	cmd := exec.Command(bin, "-c", confPath, "-f", filepath.Join(s.opts.Dir, "sim.emu"),
		"-s", filepath.Join(s.opts.Dir, "state"), "-n")
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run ipmi_sim: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill() // our ipmi_sim, by its pid
		<-exited
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ipmiPing(port) {
			s.cmd, s.exited, s.port = cmd, exited, port
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("ipmi_sim exited at start on port %d", port)
		case <-ctx.Done():
			stop()
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("ipmi_sim on port %d did not answer within 10s", port)
		}
	}
}

// ipmiGetAuthCaps is an IPMI 1.5 "Get Channel Authentication Capabilities"
// request in an RMCP packet, as ipmitool sends it first: it needs no
// session and changes nothing, so it serves as a readiness ping.
var ipmiGetAuthCaps = []byte{
	0x06, 0x00, 0xff, 0x07, // RMCP: version, reserved, seq, class IPMI
	0x00, 0, 0, 0, 0, 0, 0, 0, 0, // auth type none, session seq, session id
	0x09,             // message length
	0x20, 0x18, 0xc8, // rsAddr BMC, netFn App, checksum
	0x81, 0x00, 0x38, 0x0e, 0x04, 0x35, // rqAddr, seq, cmd, channel, priv admin, checksum
}

// ipmiPing reports whether something answers IPMI on 127.0.0.1:port.
func ipmiPing(port int) bool {
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	defer c.Close()
	if _, err := c.Write(ipmiGetAuthCaps); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	return err == nil && n > 0
}

// Host is the BMC's address for a configuration.
func (s *IPMISim) Host() string { return "127.0.0.1" }

// Port is the BMC's UDP port.
func (s *IPMISim) Port() int { return s.port }

// PowerOn reports whether the chassis is on, from the power file.
func (s *IPMISim) PowerOn() (bool, error) {
	b, err := os.ReadFile(s.power)
	if err != nil {
		return false, fmt.Errorf("read chassis power: %w", err)
	}
	return strings.TrimSpace(string(b)) != "0", nil
}

// SetPower changes the chassis power behind the BMC's back (a host that
// came back on by itself).
func (s *IPMISim) SetPower(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	if err := os.WriteFile(s.power, []byte(v), 0o600); err != nil {
		return fmt.Errorf("set chassis power: %w", err)
	}
	return nil
}

// Ops returns the chassis operations received, in order: "power 0",
// "power 1", "shutdown 1" (soft off).
func (s *IPMISim) Ops() ([]string, error) {
	b, err := os.ReadFile(filepath.Join(s.opts.Dir, "ops.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read chassis operations: %w", err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n"), nil
}

// Output is what ipmi_sim printed, for test failure messages.
func (s *IPMISim) Output() string { return s.out.String() }

// Close stops ipmi_sim.
func (s *IPMISim) Close() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Kill() // our ipmi_sim, by its pid
	<-s.exited
}
