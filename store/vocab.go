package store

// The store's vocabulary: what an action acts on, what it does, and how
// loud an event is. The schema's CHECKs list the target kinds and levels
// (migrations/00001_schema.sql); the runner and the pages compare these
// constants, never spelled-out strings or prefixes, so that a renamed
// operation breaks the build instead of silently matching nothing.

// TargetKind is what an action acts on.
type TargetKind string

// Target kinds; the schema allows only these.
const (
	TargetVM        TargetKind = "vm"
	TargetStorage   TargetKind = "storage"
	TargetHost      TargetKind = "host"
	TargetBMC       TargetKind = "bmc"
	TargetOpenStack TargetKind = "openstack"
)

// Operation is what an action does to its target. Storage commands carry
// operations derived from their command (config.StorageCommand.Operation:
// ceph-set-FLAG, stop-ceph, storage-command); every other operation is one
// of the constants below.
type Operation string

// Operations of a simulation: they read and change nothing.
const (
	OpCheckListServers   Operation = "check-list-servers"
	OpCheckStorageHealth Operation = "check-storage-health"
	OpCheckSSH           Operation = "check-ssh"
	OpCheckPrivilege     Operation = "check-privilege"
	OpCheckBMC           Operation = "check-bmc"
)

// Operations of a shutdown.
const (
	OpOSStop Operation = "os-stop"
	// OpPowerOff is a host's whole power-off sequence; its outcome is the
	// host's. The SSH command and the BMC calls below are its parts.
	OpPowerOff    Operation = "power-off"
	OpSSHPowerOff Operation = "ssh-poweroff"
	// OpSelfPowerOff is the power-off of the machine running shutdownd,
	// the job's last action, and OpAwaitDown its wait for the end.
	OpSelfPowerOff Operation = "self-poweroff"
	OpAwaitDown    Operation = "await-down"

	OpBMCSoftOff        Operation = "bmc-soft-off"
	OpBMCHardOff        Operation = "bmc-hard-off"
	OpBMCConfirmOff     Operation = "bmc-confirm-off"
	OpBMCConfirmSoftOff Operation = "bmc-confirm-soft-off"
	OpBMCConfirmHardOff Operation = "bmc-confirm-hard-off"
)

// ConfirmsOff reports whether o is a BMC read that waits for a host to be
// Off (after the SSH power-off, the soft off or the hard off): a success
// of any of them proves the host off.
func (o Operation) ConfirmsOff() bool {
	switch o {
	case OpBMCConfirmOff, OpBMCConfirmSoftOff, OpBMCConfirmHardOff:
		return true
	}
	return false
}

// PartOfPowerOff reports whether o is one part of a host's power-off
// sequence (the SSH command, a BMC power command or confirmation, the wait
// for this machine to go down). Its failure is not the host's: the host's
// own OpPowerOff or OpSelfPowerOff action holds the outcome, which a later
// part may have made good (a refused SSH power-off, then a BMC soft off).
func (o Operation) PartOfPowerOff() bool {
	switch o {
	case OpSSHPowerOff, OpAwaitDown, OpBMCSoftOff, OpBMCHardOff:
		return true
	}
	return o.ConfirmsOff()
}

// Level is how loud an event is; the schema allows only these.
type Level string

// Event levels.
const (
	LevelInfo  Level = "info"
	LevelWarn  Level = "warn"
	LevelError Level = "error"
)
