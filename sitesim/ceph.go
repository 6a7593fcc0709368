package sitesim

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// OSDsPerHost is how many OSDs each simulated storage host carries.
const OSDsPerHost = 6

// CephCluster is the simulated Ceph cluster of a site: its OSD flags, and
// the OSDs of each storage host. Every host's `ceph` command reads and
// changes the same cluster, as on a real site where any admin node talks to
// the monitors.
//
// An OSD runs while its host is on, booted, and its ceph.target started
// (the simulated hosts do not start it at boot: a startup that forgot the
// `systemctl start ceph.target` would wait forever). An OSD reads up while
// it runs; while `nodown` is set, an OSD that was up keeps reading up after
// its daemon stopped, as the monitors of a real cluster do: that is why a
// startup must unset nodown before it waits for the OSDs.
type CephCluster struct {
	mu      sync.Mutex
	flags   []string
	members []*cephMember
	// startDelay is how long an OSD takes from `systemctl start` to up.
	startDelay time.Duration
	// flagLog records every flag change, for tests that check the order.
	flagLog []FlagChange
}

// FlagChange is one `ceph osd set|unset` the cluster accepted, with the
// number of OSDs up at that moment.
type FlagChange struct {
	At    time.Time
	Flag  string
	Set   bool
	OSDUp int
}

type cephMember struct {
	name     string
	machine  *Machine
	osds     int
	started  bool      // ceph.target started since the last power-on
	upAt     time.Time // when the started OSDs are up
	markedUp bool      // what the monitors say
}

// NewCephCluster returns a cluster with no storage hosts; OSDs take
// startDelay to come up after `systemctl start ceph.target`.
func NewCephCluster(startDelay time.Duration) *CephCluster {
	return &CephCluster{startDelay: startDelay}
}

// AddHost adds a storage host's OSDs, running and up.
func (c *CephCluster) AddHost(name string, m *Machine, osds int) {
	c.mu.Lock()
	mem := &cephMember{name: name, machine: m, osds: osds, started: true, markedUp: true}
	c.members = append(c.members, mem)
	c.mu.Unlock()
	m.OnChange(func(PowerState) {
		if !m.Ready() {
			c.mu.Lock()
			mem.started = false
			c.mu.Unlock()
		}
	})
}

// Flags returns the OSD flags set now, in the order they were set.
func (c *CephCluster) Flags() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.flags)
}

// FlagLog returns every flag change so far, oldest first.
func (c *CephCluster) FlagLog() []FlagChange {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.flagLog)
}

// OSDs returns how many OSDs the cluster has and how many read up now.
func (c *CephCluster) OSDs() (total, up int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.osdsLocked()
}

func (c *CephCluster) osdsLocked() (total, up int) {
	nodown := slices.Contains(c.flags, "nodown")
	now := time.Now()
	for _, m := range c.members {
		running := m.started && m.machine.Ready() && !now.Before(m.upAt)
		switch {
		case running:
			m.markedUp = true
		case !nodown:
			m.markedUp = false
		}
		total += m.osds
		if m.markedUp {
			up += m.osds
		}
	}
	return total, up
}

// setDaemon records `systemctl start|stop ceph.target` on host name.
func (c *CephCluster) setDaemon(name string, start bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.osdsLocked() // settle what the monitors saw before the change
	for _, m := range c.members {
		if m.name != name {
			continue
		}
		if start && !m.started {
			m.upAt = time.Now().Add(c.startDelay)
		}
		m.started = start
	}
}

// setFlagLocked applies `ceph osd set|unset flag`; c.mu is held.
func (c *CephCluster) setFlagLocked(flag string, set bool) {
	_, up := c.osdsLocked()
	i := slices.Index(c.flags, flag)
	switch {
	case set && i < 0:
		c.flags = append(c.flags, flag)
	case !set && i >= 0:
		c.flags = slices.Delete(c.flags, i, i+1)
	}
	c.flagLog = append(c.flagLog, FlagChange{At: time.Now(), Flag: flag, Set: set, OSDUp: up})
}

func (c *CephCluster) healthLocked() string {
	total, up := c.osdsLocked()
	var warn []string
	if len(c.flags) > 0 {
		warn = append(warn, strings.Join(c.flags, ",")+" flag(s) set")
	}
	if up < total {
		warn = append(warn, fmt.Sprintf("%d osds down", total-up))
	}
	if len(warn) == 0 {
		return "HEALTH_OK"
	}
	return "HEALTH_WARN " + strings.Join(warn, "; ")
}

func (c *CephCluster) statusLocked() string {
	total, up := c.osdsLocked()
	var b strings.Builder
	b.WriteString("  cluster:\n    id:     5b0f3c1e-2a4d-4c7e-9f10-6d8e2b7a9c31\n")
	fmt.Fprintf(&b, "    health: %s\n\n", c.healthLocked())
	b.WriteString("  services:\n    mon: 3 daemons, quorum a,b,c\n    mgr: a(active)\n")
	fmt.Fprintf(&b, "    osd: %d osds: %d up, %d in\n", total, up, total)
	if len(c.flags) > 0 {
		fmt.Fprintf(&b, "         flags %s\n", strings.Join(c.flags, ","))
	}
	b.WriteString("\n  data:\n    pools:   4 pools, 512 pgs\n    pgs:     512 active+clean\n")
	return b.String()
}

// osdStatJSONLocked is `ceph osd stat -f json`, as Ceph Quincy and later
// print it.
func (c *CephCluster) osdStatJSONLocked() string {
	total, up := c.osdsLocked()
	b, _ := json.Marshal(map[string]any{
		"epoch": 100 + len(c.flagLog), "num_osds": total, "num_up_osds": up, "osd_up_since": 1717000000,
		"num_in_osds": total, "osd_in_since": 1717000000, "num_remapped_pgs": 0,
	})
	return string(b) + "\n"
}
