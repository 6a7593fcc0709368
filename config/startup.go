package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Startup defaults (SPEC section 5).
const (
	DefaultHostBoot     = 10 * time.Minute
	DefaultStorageReady = 10 * time.Minute
)

// CephStartCommand starts every Ceph daemon of one storage host.
const CephStartCommand = "systemctl start ceph.target"

// CephOSDStatCommand reads how many OSDs are up, in JSON.
const CephOSDStatCommand = "ceph osd stat -f json"

// cephUnsetPrefix starts every flag-unset command; Operation recognises it.
const cephUnsetPrefix = "ceph osd unset "

// CephUnsetCommand is the command that unsets one OSD flag.
func CephUnsetCommand(flag string) string { return cephUnsetPrefix + flag }

// CephEarlyUnset are the flags a startup unsets before it starts the OSDs:
// pause, so client I/O can run, and nodown, because while it is set an OSD
// whose daemon is not running still reads up and there would be nothing
// to wait for.
var CephEarlyUnset = []string{"pause", "nodown"}

// CephLateUnset are the flags a startup unsets once every OSD is up, so the
// cluster does not start moving data while hosts are still coming back.
var CephLateUnset = []string{"nobackfill", "norebalance", "norecover", "noout"}

// StartupGroups returns the non-self hosts in startup order: the shutdown
// order (HostGroups) reversed, so the control plane and storage are up
// before the compute hosts whose VMs need them.
func (c *Config) StartupGroups() [][]Host {
	g := c.HostGroups()
	slices.Reverse(g)
	return g
}

// startupCommands reads storage.startup_commands (type commands): the
// same shape as storage.commands, and optional.
func (d *decoder) startupCommands(m map[string]entry, c *Config) {
	e, ok := m["startup_commands"]
	if !ok {
		return
	}
	first := map[StorageCommand]int{}
	for i, item := range d.sequence(e.val, "storage.startup_commands") {
		p := fmt.Sprintf("storage.startup_commands[%d]", i)
		sc, ok := d.storageCommand(item, p, c)
		if !ok {
			continue
		}
		if sc.Host == "" || sc.Command == "" {
			continue
		}
		// Keyed by host and command in the store, as storage.commands.
		if j, dup := first[sc]; dup {
			d.fail(item, p, "the same command on the same host as storage.startup_commands[%d]; each runs once", j)
			continue
		}
		first[sc] = i
		c.Storage.StartupCommands = append(c.Storage.StartupCommands, sc)
	}
}

// describeStartup prints what POST /startup does, in order.
func (c *Config) describeStartup(p func(string, ...any)) {
	t := c.Timeouts
	p("")
	p("Startup (POST /startup, restoring the latest shutdown), in this order")
	for i, g := range c.StartupGroups() {
		names := make([]string, len(g))
		for j, h := range g {
			names[j] = h.Name
		}
		p("  hosts group %d: %s", i+1, strings.Join(names, ", "))
	}
	if self, ok := c.Self(); ok {
		p("  (%s runs shutdownd and is already on)", self.Name)
	}
	p("  per host: BMC power on if it reads Off, then wait up to %s for SSH with the known host key", dur(t.HostBoot))
	s := c.Storage
	switch {
	case s.Type == StorageCeph:
		p("  storage (ceph) on %s: unset %s; %s on %s; wait up to %s until every OSD is up; unset %s",
			s.AdminHost, strings.Join(CephEarlyUnset, ", "), CephStartCommand, strings.Join(s.Hosts, ", "),
			dur(t.StorageReady), strings.Join(CephLateUnset, ", "))
	case s.Type == StorageCommands && len(s.StartupCommands) > 0:
		for _, cmd := range s.StartupCommands {
			p("  storage on %s: %s", cmd.Host, cmd.Command)
		}
	case s.Type == StorageCommands:
		p("  storage: nothing to start (type commands without startup_commands)")
	default:
		p("  storage: nothing to start (type %s)", s.Type)
	}
	if c.OpenStack.Enabled() {
		p("  OpenStack: wait up to %s for Keystone, Nova and every compute service; then os-start the VMs that shutdown stopped, %d at a time, waiting up to %s for ACTIVE",
			dur(t.HostBoot), c.OpenStack.Concurrency, dur(c.OpenStack.StopTimeout))
	}
}
