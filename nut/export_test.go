package nut

import "testing"

// ListenSilent is listenSilentT for the external tests.
func ListenSilent(t *testing.T) string { return listenSilentT(t) }
