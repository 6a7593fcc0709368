package store

import "context"

// The runner writes through BeginActions, FinishActions and WriteBatch (via
// its journal); these single-record forms of them keep the tests short.

// beginAction is BeginActions for a single key.
func beginAction(ctx context.Context, s *Store, key ActionKey, detail string) (Action, error) {
	as, err := s.BeginActions(ctx, []ActionKey{key}, detail)
	if err != nil {
		return Action{}, err
	}
	return as[0], nil
}

// finishAction is FinishActions for a single action.
func finishAction(ctx context.Context, s *Store, id int64, state ActionState, detail, errMsg string) error {
	return s.FinishActions(ctx, []ActionResult{{ID: id, State: state, Detail: detail, Error: errMsg}})
}

// setCurrentStep writes the job's progress text as the runner does, in a
// Batch.
func setCurrentStep(ctx context.Context, s *Store, id int64, text string) error {
	_, err := s.WriteBatch(ctx, Batch{JobID: id, CurrentStep: &text})
	return err
}
