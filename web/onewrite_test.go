package web

import (
	"context"

	"github.com/edgeops/shutdownd/store"
)

// The runner writes through the store's batch methods (via its journal);
// these single-record forms of them keep the tests short.

// setCurrentStep writes a job's progress text as the runner does, in a
// store.Batch.
func setCurrentStep(ctx context.Context, st *store.Store, id int64, text string) error {
	_, err := st.WriteBatch(ctx, store.Batch{JobID: id, CurrentStep: &text})
	return err
}

// beginAction is BeginActions for a single key.
func beginAction(ctx context.Context, st *store.Store, key store.ActionKey, detail string) (store.Action, error) {
	as, err := st.BeginActions(ctx, []store.ActionKey{key}, detail)
	if err != nil {
		return store.Action{}, err
	}
	return as[0], nil
}

// finishAction is FinishActions for a single action.
func finishAction(ctx context.Context, st *store.Store, id int64, state store.ActionState, detail, errMsg string) error {
	return st.FinishActions(ctx, []store.ActionResult{{ID: id, State: state, Detail: detail, Error: errMsg}})
}
