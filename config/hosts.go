package config

import (
	"fmt"
	"net/url"
	"strings"

	"go.yaml.in/yaml/v3"
)

func (d *decoder) hosts(key, n *yaml.Node, c *Config, top bmcDraft) {
	first := map[string]int{}         // name -> line
	longIPMI := map[*yaml.Node]bool{} // password settings already reported
	// Hosts lacking a key file or known_hosts: reported once when no host
	// has one, per host otherwise.
	var noKey, noKnown []*FieldError
	items := d.sequence(n, "hosts")
	var self *yaml.Node
	var selfName string
	var nodes []hostNodes // of each host in c.Hosts, for the guards
	for i, item := range items {
		p := fmt.Sprintf("hosts[%d]", i)
		m := d.mapping(item, p, "name", "role", "address", "self", "ssh", "bmc")
		if m == nil {
			continue
		}
		h := Host{SSH: c.SSH}
		if e, ok := m["name"]; !ok {
			d.fail(item, p+".name", "required")
		} else if s, ok := d.nonEmpty(e.val, p+".name"); ok {
			if strings.ContainsAny(s, " \t\r\n") {
				d.fail(e.val, p+".name", "%q contains white space", s)
			} else if line, dup := first[s]; dup {
				d.fail(e.val, p+".name", "duplicate host name %q (first used at line %d)", s, line)
			} else {
				first[s] = e.val.Line
				h.Name = s
			}
		}
		if e, ok := m["role"]; !ok {
			d.fail(item, p+".role", "required (one of %s)", strings.Join(Roles, ", "))
		} else if s, ok := d.oneOf(e.val, p+".role", Roles...); ok {
			h.Role = s
		}
		if e, ok := m["address"]; !ok {
			d.fail(item, p+".address", "required (host:port for SSH)")
		} else if s, ok := d.nonEmpty(e.val, p+".address"); ok {
			if a, err := sshAddress(s); err != nil {
				d.fail(e.val, p+".address", "%v", err)
			} else {
				h.Address = a
			}
		}
		if e, ok := m["self"]; ok {
			if v, ok := d.boolean(e.val, p+".self"); ok && v {
				if self != nil {
					d.fail(e.val, p+".self", "a second self host: %s (line %d) is already the machine running shutdownd", selfName, self.Line)
				} else {
					self, selfName = e.val, h.Name
					h.Self = true
				}
			}
		}
		if e, ok := m["ssh"]; ok {
			d.sshBlock(e.val, p+".ssh", &h.SSH)
		}
		if h.SSH.KeyFile == "" {
			noKey = append(noKey, &FieldError{File: d.file, Line: item.Line, Path: p + ".ssh.key_file",
				Reason: fmt.Sprintf("required: set ssh.key_file or %s.ssh.key_file", p)})
		}
		if h.SSH.KnownHosts == "" {
			noKnown = append(noKnown, &FieldError{File: d.file, Line: item.Line, Path: p + ".ssh.known_hosts",
				Reason: fmt.Sprintf("required (host keys are always verified): set ssh.known_hosts or %s.ssh.known_hosts", p)})
		}
		hn := hostNodes{address: item}
		if e, ok := m["address"]; ok {
			hn.address = e.val
		}
		if e, ok := m["bmc"]; ok && !isNull(e.val) {
			h.BMC = d.hostBMC(e, p, top, h.Name, longIPMI)
			hn.bmc = valueOf(e.val, "address", e.key)
		}
		if h.Name != "" {
			c.Hosts = append(c.Hosts, h)
			nodes = append(nodes, hn)
		}
	}
	d.guards(c, nodes, key)
	for _, missing := range [][]*FieldError{noKey, noKnown} {
		if len(missing) > 1 && len(missing) == len(items) {
			field := missing[0].Path[strings.LastIndex(missing[0].Path, ".")+1:]
			d.fail(key, "ssh."+field, "required by every host: set it in the top-level ssh block")
			continue
		}
		d.errs = append(d.errs, missing...)
	}
}

// hostBMC merges a host's bmc block onto the top-level defaults and checks
// that the result can actually open a session.
func (d *decoder) hostBMC(e entry, p string, top bmcDraft, name string, longIPMI map[*yaml.Node]bool) *BMC {
	b := top
	m := d.bmcBlock(e.val, p+".bmc", &b, true)
	if m == nil {
		return nil
	}
	if _, ownPort := m["port"]; !ownPort && b.Protocol != top.Protocol {
		// A port set next to another protocol is that protocol's port: a
		// host that switches protocol gets its own protocol's default.
		b.portSet = false
	}
	if _, ok := m["address"]; !ok {
		d.fail(e.key, p+".bmc.address", "required: a BMC needs an address (leave the bmc block out for a host without BMC)")
	}
	if b.User == "" {
		d.fail(e.key, p+".bmc.user", "required: set bmc.user or %s.bmc.user", p)
	}
	if !b.passwordSet {
		d.fail(e.key, p+".bmc", "no password: set password_file or password_env here or in the top-level bmc block")
	}
	if b.Protocol == ProtocolIPMI && len(b.Password) > MaxIPMIPasswordLen && b.passwordNode != nil && !longIPMI[b.passwordNode] {
		// Reported where the password is set, once, even when many IPMI
		// hosts inherit it. The length itself is not shown: it says
		// something about a secret.
		longIPMI[b.passwordNode] = true
		d.fail(b.passwordNode, b.passwordPath, "the password is longer than %d bytes, the most IPMI v2 can send; "+
			"host %s uses protocol ipmi and could never log in (shorten the password on the BMC, or use redfish)", MaxIPMIPasswordLen, name)
	}
	if !b.portSet {
		b.Port = DefaultRedfishPort
		if b.Protocol == ProtocolIPMI {
			b.Port = DefaultIPMIPort
		}
	}
	out := b.BMC
	return &out
}

func (d *decoder) knownHost(n *yaml.Node, path, name string, c *Config) bool {
	if _, ok := c.Host(name); !ok {
		d.fail(n, path, "%q is not a host of the hosts list", name)
		return false
	}
	return true
}

// storage reads the storage section: its type decides which keys it takes
// (storageCeph, storageCommands); a key another type would use is refused,
// so a site never believes a command runs that does not.
func (d *decoder) storage(top map[string]entry, c *Config) {
	se, ok := top["storage"]
	if !ok {
		return
	}
	m := d.mapping(se.val, "storage", "type", "admin_host", "hosts", "commands", "health_command", "startup_commands")
	if m == nil {
		return // not a mapping: reported
	}
	s := &c.Storage
	te, ok := m["type"]
	if !ok {
		d.fail(se.key, "storage.type", "required when the storage section is set (ceph, commands or none)")
		return
	}
	typ, ok := d.oneOf(te.val, "storage.type", StorageCeph, StorageCommands, StorageNone)
	if !ok {
		return
	}
	s.Type = typ
	if e, ok := m["admin_host"]; ok && typ != StorageNone {
		if name, ok := d.nonEmpty(e.val, "storage.admin_host"); ok && d.knownHost(e.val, "storage.admin_host", name, c) {
			s.AdminHost = name
		}
	}
	if e, ok := m["health_command"]; ok && typ != StorageNone {
		if v, ok := d.nonEmpty(e.val, "storage.health_command"); ok {
			s.HealthCommand = v
		}
	}
	switch typ {
	case StorageNone:
		d.unusedStorage(m, typ, "admin_host", "hosts", "commands", "health_command", "startup_commands")
	case StorageCeph:
		d.unusedStorage(m, typ, "commands", "startup_commands")
		d.storageCeph(se, m, c)
	case StorageCommands:
		d.unusedStorage(m, typ, "hosts")
		d.storageCommands(se, m, c)
		d.startupCommands(m, c)
	}
}

// unusedStorage refuses the storage keys that type typ does not use.
func (d *decoder) unusedStorage(m map[string]entry, typ string, keys ...string) {
	for _, k := range keys {
		if e, ok := m[k]; ok {
			d.fail(e.key, "storage."+k, "not used with type %s", typ)
		}
	}
}

// storageCeph reads the admin host and the hosts where ceph.target is
// stopped, each a known host listed once.
func (d *decoder) storageCeph(se entry, m map[string]entry, c *Config) {
	s := &c.Storage
	if _, ok := m["admin_host"]; !ok {
		d.fail(se.key, "storage.admin_host", "required with type ceph (the host that sets the OSD flags)")
	}
	if s.HealthCommand == "" {
		s.HealthCommand = DefaultCephHealthCommand
	}
	e, ok := m["hosts"]
	if !ok {
		d.fail(se.key, "storage.hosts", "required with type ceph (the hosts where ceph.target is stopped)")
		return
	}
	seen := map[string]bool{}
	items := d.sequence(e.val, "storage.hosts")
	if len(items) == 0 && (e.val.Kind == yaml.SequenceNode || isNull(e.val)) {
		d.fail(e.key, "storage.hosts", "must list at least one host")
	}
	for i, item := range items {
		p := fmt.Sprintf("storage.hosts[%d]", i)
		name, ok := d.nonEmpty(item, p)
		if !ok || !d.knownHost(item, p, name, c) {
			continue
		}
		if seen[name] {
			d.fail(item, p, "%q is listed twice", name)
			continue
		}
		seen[name] = true
		s.Hosts = append(s.Hosts, name)
	}
}

// storageCommands reads the operator's own storage commands, in order.
func (d *decoder) storageCommands(se entry, m map[string]entry, c *Config) {
	s := &c.Storage
	if s.HealthCommand != "" && s.AdminHost == "" {
		if _, ok := m["admin_host"]; !ok {
			d.fail(m["health_command"].key, "storage.health_command", "needs storage.admin_host, the host it runs on")
		}
	}
	e, ok := m["commands"]
	if !ok {
		d.fail(se.key, "storage.commands", "required with type commands")
		return
	}
	items := d.sequence(e.val, "storage.commands")
	if len(items) == 0 && (e.val.Kind == yaml.SequenceNode || isNull(e.val)) {
		d.fail(e.key, "storage.commands", "must list at least one command")
	}
	// The store keys a command's record by host and command, so a
	// resumed job knows what already ran; the same command twice on one
	// host could not be told apart, and is refused.
	first := map[StorageCommand]int{}
	for i, item := range items {
		p := fmt.Sprintf("storage.commands[%d]", i)
		sc, ok := d.storageCommand(item, p, c)
		if !ok {
			continue
		}
		if sc.Host != "" && sc.Command != "" {
			if j, dup := first[sc]; dup {
				d.fail(item, p, "the same command on the same host as storage.commands[%d]; each runs once", j)
				continue
			}
			first[sc] = i
		}
		s.Commands = append(s.Commands, sc)
	}
}

// storageCommand reads one host/command pair; ok is false when the item is
// not a mapping (reported).
func (d *decoder) storageCommand(item *yaml.Node, p string, c *Config) (sc StorageCommand, ok bool) {
	cm := d.mapping(item, p, "host", "command")
	if cm == nil {
		return sc, false
	}
	if he, ok := cm["host"]; !ok {
		d.fail(item, p+".host", "required")
	} else if name, ok := d.nonEmpty(he.val, p+".host"); ok && d.knownHost(he.val, p+".host", name, c) {
		sc.Host = name
	}
	if ce, ok := cm["command"]; !ok {
		d.fail(item, p+".command", "required")
	} else if v, ok := d.nonEmpty(ce.val, p+".command"); ok {
		sc.Command = v
	}
	return sc, true
}

func (d *decoder) hostOrder(e entry, c *Config) {
	groups := d.sequence(e.val, "host_order")
	if len(groups) == 0 {
		return
	}
	seen := map[string]bool{}
	for gi, g := range groups {
		gp := fmt.Sprintf("host_order[%d]", gi)
		if g.Kind != yaml.SequenceNode {
			d.fail(g, gp, "must be a list of host names (one list per group of hosts shut down together)")
			continue
		}
		if len(g.Content) == 0 {
			d.fail(g, gp, "empty group")
			continue
		}
		var names []string
		for ni, item := range d.sequence(g, gp) {
			p := fmt.Sprintf("%s[%d]", gp, ni)
			name, ok := d.nonEmpty(item, p)
			if !ok || !d.knownHost(item, p, name, c) {
				continue
			}
			if h, _ := c.Host(name); h.Self {
				d.fail(item, p, "%q is the self host, which always goes last: remove it from host_order", name)
				continue
			}
			if seen[name] {
				d.fail(item, p, "%q is listed twice", name)
				continue
			}
			seen[name] = true
			names = append(names, name)
		}
		c.HostOrder = append(c.HostOrder, names)
	}
	for _, h := range c.Hosts {
		if !h.Self && !seen[h.Name] {
			d.fail(e.key, "host_order", "host %q is missing: list every host except the self host exactly once", h.Name)
		}
	}
}

func (d *decoder) notify(n *yaml.Node, c *Config) {
	m := d.mapping(n, "notify", "webhooks")
	e, ok := m["webhooks"]
	if !ok {
		return
	}
	for i, item := range d.sequence(e.val, "notify.webhooks") {
		p := fmt.Sprintf("notify.webhooks[%d]", i)
		wm := d.mapping(item, p, "url", "secret_env")
		if wm == nil {
			continue
		}
		var w Webhook
		if ue, ok := wm["url"]; !ok {
			d.fail(item, p+".url", "required")
		} else if s, ok := d.nonEmpty(ue.val, p+".url"); ok {
			// The URL is not echoed: webhook URLs often carry a token.
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				d.fail(ue.val, p+".url", "must be an http:// or https:// URL with a host")
			} else {
				w.URL = s
			}
		}
		if se, ok := wm["secret_env"]; ok {
			w.SecretEnv, _ = d.str(se.val, p+".secret_env")
			w.Secret = d.secretEnv(se.val, p+".secret_env")
		}
		c.Notify.Webhooks = append(c.Notify.Webhooks, w)
	}
}
