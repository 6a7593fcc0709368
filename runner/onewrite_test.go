package runner_test

import (
	"context"

	"github.com/edgeops/shutdownd/store"
)

// Tests that play a record a killed process left write it with the store's
// batch methods, as the runner does; these single-record forms keep them
// short.

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
