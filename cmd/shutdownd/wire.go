package main

import (
	"net/http"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
)

// handler builds the HTTP handler: the JSON API and everything mounted on
// its router (so every path shares the JSON 404/405 and panic handling).
// Features are wired here, one block each.
func (m *Main) handler(st *store.Store) (http.Handler, error) {
	api := handlers.New(handlers.Options{Store: st, Runner: m.Runner, Logger: m.Logger})
	return api, nil
}
