package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

func TestResumeDecision(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	const window = 10 * time.Minute
	cases := []struct {
		name     string
		jobBoot  string
		boot     string
		age      time.Duration
		resume   bool
		whyParts []string
	}{
		{"same boot, seconds ago", "a", "a", 3 * time.Second, true, nil},
		{"same boot, just inside the window", "a", "a", window - time.Millisecond, true, nil},
		{"same boot, at the window", "a", "a", window, false, []string{"last record 10m0s ago"}},
		{"same boot, days ago", "a", "a", 50 * time.Hour, false, []string{"last record 50h0m0s ago"}},
		{"rebooted, seconds ago", "a", "b", 3 * time.Second, false, []string{"the machine rebooted"}},
		{"rebooted and old", "a", "b", time.Hour, false, []string{"the machine rebooted", "last record 1h0m0s ago"}},
		{"no boot id recorded, young", "", "b", time.Minute, true, nil},
		{"no boot id recorded, old", "", "b", time.Hour, false, []string{"last record 1h0m0s ago"}},
		{"this machine's boot unknown", "a", "", time.Second, false, []string{"the machine may have rebooted (its boot id cannot be read)"}},
		// A clock stepped back within the same boot: the record looks to be
		// from the future, and the same boot says it is this outage.
		{"same boot, record in the future", "a", "a", -time.Hour, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resume, why := resumeDecision(store.Job{BootID: tc.jobBoot}, now.Add(-tc.age), tc.boot, window, now)
			if resume != tc.resume {
				t.Fatalf("resume = %v (%q), want %v", resume, why, tc.resume)
			}
			if want := strings.Join(tc.whyParts, "; "); why != want {
				t.Errorf("why = %q, want %q", why, want)
			}
		})
	}
}

func TestHeartbeatEvery(t *testing.T) {
	for _, tc := range []struct{ window, want time.Duration }{
		{10 * time.Minute, time.Minute},
		{2 * time.Minute, 30 * time.Second},
		{2 * time.Second, 500 * time.Millisecond},
	} {
		if got := heartbeatEvery(tc.window); got != tc.want {
			t.Errorf("heartbeatEvery(%s) = %s, want %s", tc.window, got, tc.want)
		}
	}
}
