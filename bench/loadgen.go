package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// LoadResult is what a load generator run measured.
type LoadResult struct {
	Requests int
	Errors   int // transport errors and non-200 answers
	Elapsed  time.Duration
	P50, P99 time.Duration
}

// RPS is the rate of successful requests.
func (r LoadResult) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests-r.Errors) / r.Elapsed.Seconds()
}

func (r LoadResult) String() string {
	return fmt.Sprintf("%.0f req/s, p50 %s, p99 %s (%d requests, %d errors)",
		r.RPS(), fmtDur(r.P50), fmtDur(r.P99), r.Requests, r.Errors)
}

// Load sends GET url with the auth-token header from conns concurrent
// keep-alive connections until ctx ends, closed loop (each connection
// sends its next request when the answer is read), and records every
// latency. It is the load generator of the status endpoint: a closed loop
// measures the throughput the service sustains without queueing requests
// in the generator.
func Load(ctx context.Context, url, token string, conns int) LoadResult {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1<<14)
			nerr := 0
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("auth-token", token)
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					nerr++
					lat = append(lat, time.Since(t0))
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(t0))
				if resp.StatusCode != http.StatusOK {
					nerr++
				}
			}
			mu.Lock()
			latencies = append(latencies, lat...)
			errs += nerr
			mu.Unlock()
		}()
	}
	wg.Wait()
	res := LoadResult{Requests: len(latencies), Errors: errs, Elapsed: time.Since(start)}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		res.P50 = latencies[len(latencies)*50/100]
		res.P99 = latencies[min(len(latencies)-1, len(latencies)*99/100)]
	}
	return res
}
