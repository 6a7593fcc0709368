package runner

import (
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// A job ran to its end when each of its steps, by name, ended by running;
// a missing step (never reached) or one still open or cancelled means a
// cancel stopped something.
func TestRanToEnd(t *testing.T) {
	t.Parallel()
	steps := func(states ...store.StepState) []store.Step {
		var out []store.Step
		for i, st := range states {
			out = append(out, store.Step{Seq: i + 1, Name: stepNames[i], State: st})
		}
		return out
	}
	ok, failed, skipped := store.StepSucceeded, store.StepFailed, store.StepSkipped
	cases := []struct {
		name  string
		steps []store.Step
		want  bool
	}{
		{"all succeeded", steps(ok, ok, ok), true},
		{"failed and skipped steps still ran", steps(failed, skipped, ok), true},
		{"hosts never reached", steps(ok, ok), false},
		{"no steps", nil, false},
		{"hosts running", steps(ok, ok, store.StepRunning), false},
		{"storage cancelled", steps(ok, store.StepCancelled, ok), false},
		{"three steps but hosts missing", []store.Step{{Name: StepOpenStack, State: ok}, {Name: StepStorage, State: ok}, {Name: "other", State: ok}}, false},
	}
	for _, c := range cases {
		if got := ranToEnd(c.steps); got != c.want {
			t.Errorf("%s: ranToEnd = %v, want %v", c.name, got, c.want)
		}
	}
}
