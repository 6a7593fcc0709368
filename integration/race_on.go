//go:build race

package integration

// timeScale multiplies the time budgets that a test expects never to reach
// (SSH connect and command timeouts, Nova request timeouts, the default
// step timeouts, the test's own waits). Under -race every goroutine runs
// several times slower, and CI runs the package on a loaded 2-core machine,
// where a 5 s command timeout was reached by `true` (issue 12).
const timeScale = 4
