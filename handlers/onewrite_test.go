package handlers

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
