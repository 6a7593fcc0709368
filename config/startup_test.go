package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

const startupHosts = `ssh: {key_file: id_ed25519, known_hosts: known_hosts}
hosts:
  - {name: ctl-1, role: control, address: 10.0.0.1}
  - {name: cmp-1, role: compute, address: 10.0.0.2}
  - {name: me, role: control, address: 10.0.0.3, self: true}
  - {name: sto-1, role: storage, address: 10.0.0.4}
`

func TestStartupSettings(t *testing.T) {
	dir := site(t)
	c, err := parseIn(t, dir, startupHosts)
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeouts.HostBoot != 10*time.Minute || c.Timeouts.StorageReady != 10*time.Minute {
		t.Errorf("defaults: host_boot %s, storage_ready %s; want 10m each", c.Timeouts.HostBoot, c.Timeouts.StorageReady)
	}
	var got [][]string
	for _, g := range c.StartupGroups() {
		var ns []string
		for _, h := range g {
			ns = append(ns, h.Name)
		}
		got = append(got, ns)
	}
	if want := [][]string{{"ctl-1"}, {"sto-1"}, {"cmp-1"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("startup groups %v, want the shutdown order reversed, self left out: %v", got, want)
	}

	c, err = parseIn(t, dir, startupHosts+`timeouts: {host_boot: 15m, storage_ready: 4m}
storage:
  type: commands
  commands: [{host: sto-1, command: zpool export tank}]
  startup_commands: [{host: sto-1, command: zpool import tank}]
`)
	if err != nil {
		t.Fatal(err)
	}
	if c.Timeouts.HostBoot != 15*time.Minute || c.Timeouts.StorageReady != 4*time.Minute {
		t.Errorf("timeouts %+v", c.Timeouts)
	}
	if want := []StorageCommand{{"sto-1", "zpool import tank"}}; !reflect.DeepEqual(c.Storage.StartupCommands, want) {
		t.Errorf("startup commands %v, want %v", c.Storage.StartupCommands, want)
	}
	var out bytes.Buffer
	c.Describe(&out)
	for _, want := range []string{"Startup (POST /startup", "hosts group 1: ctl-1", "hosts group 3: cmp-1",
		"(me runs shutdownd and is already on)", "wait up to 15m for SSH", "storage on sto-1: zpool import tank"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Describe lacks %q:\n%s", want, out.String())
		}
	}
}

func TestStartupSettingsRejected(t *testing.T) {
	dir := site(t)
	for _, tc := range []struct{ yml, want string }{
		{"timeouts: {host_boot: 0s}\n", "timeouts.host_boot"},
		{"timeouts: {storage_ready: soon}\n", "timeouts.storage_ready"},
		{"storage: {type: ceph, admin_host: sto-1, hosts: [sto-1], startup_commands: [{host: sto-1, command: x}]}\n", "storage.startup_commands"},
		{"storage: {type: commands, commands: [{host: sto-1, command: x}], startup_commands: [{host: nope, command: y}]}\n", "storage.startup_commands[0].host"},
		{"storage: {type: commands, commands: [{host: sto-1, command: x}], startup_commands: [{host: sto-1, command: y}, {host: sto-1, command: y}]}\n", "storage.startup_commands[1]"},
	} {
		_, err := parseIn(t, dir, startupHosts+tc.yml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one about %s", strings.TrimSpace(tc.yml), err, tc.want)
		}
	}
}
