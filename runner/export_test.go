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

// SetCloudLoginTiming shortens the backoff after failed OpenStack logins and
// the clouds.yaml polling, for tests that cannot wait minutes; it returns
// the restore function. Call it only while no runner is running.
func SetCloudLoginTiming(base, maxWait, filesPoll time.Duration) (restore func()) {
	ob, om, op := loginBackoffBase, loginBackoffMax, cloudFilesPoll
	loginBackoffBase, loginBackoffMax, cloudFilesPoll = base, maxWait, filesPoll
	return func() { loginBackoffBase, loginBackoffMax, cloudFilesPoll = ob, om, op }
}
