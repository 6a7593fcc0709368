//go:build !race

package integration

// timeScale multiplies the time budgets that a test expects never to reach
// (see race_on.go).
const timeScale = 1
