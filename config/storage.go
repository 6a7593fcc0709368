package config

import "strings"

// CephFlags are the OSD flags set on the admin host, in order, before Ceph
// is stopped: they keep the cluster from rebalancing or marking OSDs out
// while hosts go down one group at a time, so it comes back clean. The
// runner and check-config both read this list, so what is shown is what runs.
var CephFlags = []string{"noout", "norecover", "norebalance", "nobackfill", "nodown", "pause"}

// CephStopCommand stops every Ceph daemon of one storage host.
const CephStopCommand = "systemctl stop ceph.target"

// DefaultCephHealthCommand is the read-only check a simulation runs on the
// admin host.
const DefaultCephHealthCommand = "ceph health"

// cephSetPrefix starts every flag command; Operation recognises it.
const cephSetPrefix = "ceph osd set "

// CephSetCommand is the command that sets one OSD flag.
func CephSetCommand(flag string) string { return cephSetPrefix + flag }

// Plan returns the exact commands of the storage step, in order: for ceph,
// every flag of CephFlags on the admin host, then CephStopCommand on each
// storage host; for commands, the configured list; for none, nothing. Both
// the runner and Describe use it, so check-config shows what will run.
func (s Storage) Plan() []StorageCommand {
	switch s.Type {
	case StorageCeph:
		plan := make([]StorageCommand, 0, len(CephFlags)+len(s.Hosts))
		for _, f := range CephFlags {
			plan = append(plan, StorageCommand{Host: s.AdminHost, Command: CephSetCommand(f)})
		}
		for _, h := range s.Hosts {
			plan = append(plan, StorageCommand{Host: h, Command: CephStopCommand})
		}
		return plan
	case StorageCommands:
		return append([]StorageCommand(nil), s.Commands...)
	default:
		return nil
	}
}

// Operation names the command for the store's action rows: "ceph-set-FLAG"
// for a ceph flag, "stop-ceph" for CephStopCommand, "storage-command"
// otherwise. It keeps the names in one place for the runner and the audit.
func (c StorageCommand) Operation() string {
	switch {
	case strings.HasPrefix(c.Command, cephSetPrefix):
		return "ceph-set-" + strings.TrimPrefix(c.Command, cephSetPrefix)
	case c.Command == CephStopCommand:
		return "stop-ceph"
	case strings.HasPrefix(c.Command, cephUnsetPrefix):
		return "ceph-unset-" + strings.TrimPrefix(c.Command, cephUnsetPrefix)
	case c.Command == CephStartCommand:
		return "start-ceph"
	default:
		return "storage-command"
	}
}
