package handlers

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/store"
)

// statusBench is GET /shutdown/status through the real router and a real
// SQLite store while a shutdown job runs and a writer commits progress to
// it (a progress batch and an event per round, as the runner does), so the
// measured path includes the commits in between the reads.
type statusBench struct {
	st     *store.Store
	api    *Server
	secret string
	stop   func()
}

func newStatusBench(b *testing.B) *statusBench {
	b.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(b.TempDir(), "shutdownd.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = st.Close() })
	secret, err := store.NewTokenSecret()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.CreateToken(ctx, "monitor", store.HashToken(secret), []string{ScopeRead}, nil, nil); err != nil {
		b.Fatal(err)
	}
	job, _, err := st.CreateShutdown(ctx, store.NewJob{TokenName: "ups", Reason: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.StartJob(ctx, job.ID); err != nil {
		b.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; wctx.Err() == nil; i++ {
			_ = setCurrentStep(wctx, st, job.ID, fmt.Sprintf("Stopping OpenStack VMs (%d/2000 off)", i))
			_ = st.AddEvent(wctx, job.ID, "info", "progress", fmt.Sprint(i))
			time.Sleep(time.Millisecond)
		}
	}()
	return &statusBench{st: st, api: New(Options{Store: st}), secret: secret, stop: func() { cancel(); wg.Wait() }}
}

func (sb *statusBench) run(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/shutdown/status", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		req.Header.Set("auth-token", sb.secret)
		for pb.Next() {
			rec := httptest.NewRecorder()
			sb.api.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
		}
	})
}

// BenchmarkStatus measures GET /shutdown/status in process (the real
// router, authentication and status handler; no sockets) while a shutdown
// commits progress; every request reads the token and the latest job from
// SQLite:
//
//	go test -run '^$' -bench BenchmarkStatus -benchtime 3s ./handlers/
func BenchmarkStatus(b *testing.B) {
	sb := newStatusBench(b)
	defer sb.stop()
	sb.run(b)
}
