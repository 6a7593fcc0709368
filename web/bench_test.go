package web

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// BenchmarkJobPage renders the page of a finished shutdown of 2,000 VMs on
// 100 hosts (a few VMs failed, some hosts escalated to the BMC, two failed)
// through the real handler over HTTP, from a real SQLite file: the store
// reads, the event chain check, the timeline and the templates. Issue 15's
// goal is under 300 ms on the project's 2-core machine; the benchmark
// reports the time per page as ms/page.
func BenchmarkJobPage(b *testing.B) {
	e := newEnv(b, nil)
	job, _ := recordShutdown(b, e.st, bigShutdown{VMs: 2000, Hosts: 100, FailedVMs: 12, SoftOff: 10, HardOff: 4, FailedHosts: 2})
	c := e.loggedIn(b)
	path := fmt.Sprintf("/history/%d", job.ID)
	var size int
	start := time.Now()
	for b.Loop() {
		resp, body := e.get(b, c, path)
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		size = len(body)
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/page")
	b.ReportMetric(float64(size)/1024, "KiB/page")
}
