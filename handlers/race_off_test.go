//go:build !race

package handlers

// raceEnabled is true when the tests are built with -race, which makes
// every SQLite read of the pure-Go driver many times slower; load tests
// scale their volume down with it.
const raceEnabled = false
