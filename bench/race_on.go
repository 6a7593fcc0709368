//go:build race

package bench

// raceEnabled is true when this package is built with -race.
const raceEnabled = true
