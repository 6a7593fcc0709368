package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// The crash tests run the real binary as a subprocess, so that SIGKILL hits
// a whole process: its SQLite connections, goroutines and sockets die
// exactly as on a real crash. It is built once per test run, and only when a
// test asks for it, so `go test -run` of other tests pays nothing.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// shutdowndBinary returns the path of a freshly built shutdownd. It is built
// without cgo and without the race detector: the subprocess is the system
// under test, the race detector runs on the in-process tests.
func shutdowndBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "shutdownd-bin-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "shutdownd")
		cmd := exec.Command("go", "build", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build shutdownd: %v", binErr)
	}
	return binPath
}
