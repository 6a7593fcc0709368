package store

import (
	"context"
	"testing"
)

// Every target kind and level the runner may write is one the schema's
// CHECKs take, and one it does not list is refused: the constants and the
// migration cannot drift apart unnoticed.
func TestVocabularyMatchesSchema(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ctx := context.Background()
	job, err := s.CreateSimulation(ctx, NewJob{})
	if err != nil {
		t.Fatal(err)
	}
	step, err := s.EnsureStep(ctx, job.ID, 1, "hosts")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []TargetKind{TargetVM, TargetStorage, TargetHost, TargetBMC, TargetOpenStack} {
		if _, err := beginAction(ctx, s, ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: k, Target: "t", Operation: OpCheckSSH}, ""); err != nil {
			t.Errorf("target kind %s: %v", k, err)
		}
	}
	if _, err := beginAction(ctx, s, ActionKey{JobID: job.ID, StepID: step.ID, TargetKind: "switch", Target: "t", Operation: OpCheckSSH}, ""); err == nil {
		t.Error("target kind switch: accepted, want the schema's CHECK to refuse it")
	}
	for _, l := range []Level{LevelInfo, LevelWarn, LevelError} {
		if err := s.AddEvent(ctx, job.ID, l, "level "+string(l), ""); err != nil {
			t.Errorf("level %s: %v", l, err)
		}
	}
	if err := s.AddEvent(ctx, job.ID, "debug", "level debug", ""); err == nil {
		t.Error("level debug: accepted, want the schema's CHECK to refuse it")
	}
}

func TestPartOfPowerOff(t *testing.T) {
	t.Parallel()
	for op, want := range map[Operation]bool{
		OpSSHPowerOff: true, OpAwaitDown: true, OpBMCSoftOff: true, OpBMCHardOff: true,
		OpBMCConfirmOff: true, OpBMCConfirmSoftOff: true, OpBMCConfirmHardOff: true,
		OpPowerOff: false, OpSelfPowerOff: false, OpOSStop: false, OpCheckBMC: false, OpCheckSSH: false, "stop-ceph": false,
	} {
		if got := op.PartOfPowerOff(); got != want {
			t.Errorf("%s.PartOfPowerOff() = %v, want %v", op, got, want)
		}
	}
}

func TestConfirmsOff(t *testing.T) {
	t.Parallel()
	for op, want := range map[Operation]bool{
		OpBMCConfirmOff: true, OpBMCConfirmSoftOff: true, OpBMCConfirmHardOff: true,
		OpBMCSoftOff: false, OpBMCHardOff: false, OpCheckBMC: false, OpPowerOff: false, OpSSHPowerOff: false,
		"bmc-confirm-later": false,
	} {
		if got := op.ConfirmsOff(); got != want {
			t.Errorf("%s.ConfirmsOff() = %v, want %v", op, got, want)
		}
	}
}
