package runner

import "time"

// SetWarmKeepalive changes how often idle warm SSH connections are checked,
// for tests that cannot wait 15 seconds; it returns the restore function.
// Call it only while no runner is running.
func SetWarmKeepalive(d time.Duration) (restore func()) {
	old := warmKeepalive
	warmKeepalive = d
	return func() { warmKeepalive = old }
}
