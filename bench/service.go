package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// BuildService builds cmd/shutdownd into dir and returns the binary's path.
// The service runs as its own process so that its memory (VmHWM) and CPU are
// its own, not mixed with the simulated site's. It builds with the flags of
// the running test binary (-race when it has it, the same CGO_ENABLED), so
// that the packages compiled for the tests come from the build cache.
func BuildService(ctx context.Context, moduleRoot, dir string) (string, error) {
	bin := filepath.Join(dir, "shutdownd")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/shutdownd")...)
	cmd.Dir = moduleRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build shutdownd: %w: %s", err, out)
	}
	return bin, nil
}

// Service is one shutdownd process serving a simulated site.
type Service struct {
	URL   string
	Token string // read and shutdown scopes
	cmd   *exec.Cmd
	done  chan error
	log   *os.File
}

// StartService writes the site's configuration with a fresh database in
// dir, creates an API token, starts `shutdownd serve` and waits until it
// answers /healthz.
func StartService(ctx context.Context, bin string, site *sitesim.Site, dir string) (*Service, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	db := filepath.Join(dir, "shutdownd.db")
	cfgPath, err := site.WriteConfig(addr, db)
	if err != nil {
		return nil, err
	}
	token, err := createToken(ctx, db)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "shutdownd.log"))
	if err != nil {
		return nil, fmt.Errorf("create service log: %w", err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start shutdownd: %w", err)
	}
	s := &Service{URL: "http://" + addr, Token: token, cmd: cmd, done: make(chan error, 1), log: logf}
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			s.Stop()
			return nil, fmt.Errorf("shutdownd exited at start: %v (log %s)", err, logf.Name())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("shutdownd not healthy after 30s (log %s)", logf.Name())
		}
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// createToken opens the service's database before the service does (which
// also runs the migrations) and stores a token for the benchmark.
func createToken(ctx context.Context, db string) (string, error) {
	st, err := store.Open(ctx, db)
	if err != nil {
		return "", err
	}
	defer st.Close()
	secret, err := store.NewTokenSecret()
	if err != nil {
		return "", err
	}
	if _, err := st.CreateToken(ctx, "bench", store.HashToken(secret), []string{"read", "shutdown", "startup"}, nil, nil); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	return secret, nil
}

// PID is the service's process id.
func (s *Service) PID() int { return s.cmd.Process.Pid }

// PeakRSS reads the service's peak resident set size (VmHWM) from
// /proc/PID/status, in bytes.
func (s *Service) PeakRSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.PID()))
	if err != nil {
		return 0, fmt.Errorf("read process status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", v, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// Stop ends the service with SIGTERM (it stops cleanly) and waits for it.
func (s *Service) Stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.log.Close()
}

func (s *Service) request(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("auth-token", s.Token)
	return http.DefaultClient.Do(req)
}

// TriggerShutdown sends POST /shutdown and expects 202.
func (s *Service) TriggerShutdown(ctx context.Context) error {
	resp, err := s.request(ctx, http.MethodPost, "/shutdown")
	if err != nil {
		return fmt.Errorf("POST /shutdown: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST /shutdown: status %s", resp.Status)
	}
	return nil
}

// jobStatus is the part of GET /shutdown/status the harness reads.
type jobStatus struct {
	Running     bool   `json:"running"`
	State       string `json:"state"`
	CurrentStep string `json:"current_step"`
	Error       string `json:"error"`
}

// Status reads GET /shutdown/status.
func (s *Service) Status(ctx context.Context) (jobStatus, error) {
	resp, err := s.request(ctx, http.MethodGet, "/shutdown/status")
	if err != nil {
		return jobStatus{}, err
	}
	defer resp.Body.Close()
	var body struct {
		Data jobStatus `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return jobStatus{}, fmt.Errorf("decode status: %w", err)
	}
	return body.Data, nil
}

// WaitDone polls the status until the shutdown job is no longer running and
// returns its final status.
func (s *Service) WaitDone(ctx context.Context, timeout time.Duration) (jobStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		st, err := s.Status(ctx)
		if err == nil && !st.Running {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("shutdown still running after %s (last: %q, err %v)", timeout, st.CurrentStep, err)
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
