package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envInt reads an integer knob of the benchmark, with a default.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// BenchmarkSiteShutdown runs every measurement of issue 7 in one go and
// prints them side by side. Knobs (environment):
//
//	BENCH_NAIVE_SAMPLE  stop every Nth VM in the serial baseline (default 10; 0 skips the baseline)
//	BENCH_LOAD_CONNS    status load generator connections (default 16)
//	BENCH_SCALES        comma-separated VM counts for the scaling rows (default 200,2000,10000)
//	BENCH_KEEP          directory where each run's database and service log are kept
func BenchmarkSiteShutdown(b *testing.B) {
	ctx := context.Background()
	bin, err := BuildService(ctx, "..", b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	sample := envInt("BENCH_NAIVE_SAMPLE", 10)
	conns := envInt("BENCH_LOAD_CONNS", 16)
	var scales []int
	for _, s := range strings.Split(cmpOr(os.Getenv("BENCH_SCALES"), "200,2000,10000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			b.Fatalf("BENCH_SCALES: %v", err)
		}
		scales = append(scales, n)
	}

	for b.Loop() {
		run := func(sc Scale, loadConns int) Result {
			b.Helper()
			dir := b.TempDir()
			if keep := os.Getenv("BENCH_KEEP"); keep != "" {
				// Keep the database and the service log for a post-mortem.
				if dir, err = os.MkdirTemp(keep, fmt.Sprintf("run-%d-", sc.VMs)); err != nil {
					b.Fatal(err)
				}
			}
			r, err := RunShutdown(ctx, sc, RunOptions{Bin: bin, Dir: dir, LoadConns: loadConns, Timeout: 10 * time.Minute})
			if err != nil {
				b.Fatalf("%d VMs: %v", sc.VMs, err)
			}
			b.Logf("%d VMs%s: wall %s, lower bound %s (VM %s + storage %s + hosts %s), job %s %s",
				sc.VMs, map[bool]string{true: " under load"}[loadConns > 0], fmtDur(r.Wall), fmtDur(r.LowerBound.Total()),
				fmtDur(r.LowerBound.SlowestVM), fmtDur(r.LowerBound.Storage), fmtDur(r.LowerBound.Hosts), r.JobState, r.JobError)
			return r
		}
		main := run(IssueScale(2000), 0)
		loaded := run(IssueScale(2000), conns)
		byScale := map[int]Result{2000: main}
		for _, n := range scales {
			if _, ok := byScale[n]; !ok {
				byScale[n] = run(IssueScale(n), 0)
			}
		}
		var naive *NaiveResult
		if sample > 0 {
			nr, err := RunNaive(ctx, IssueScale(2000), b.TempDir(), sample)
			if err != nil {
				b.Fatalf("naive baseline: %v", err)
			}
			naive = &nr
		}
		report(b, main, loaded, naive, scales, byScale)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// report prints the seven measurements and reports the headline numbers as
// benchmark metrics.
func report(b *testing.B, main, loaded Result, naive *NaiveResult, scales []int, byScale map[int]Result) {
	var w strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&w, f+"\n", a...) }
	ok := func(met bool) string {
		if met {
			return "met"
		}
		return "MISSED"
	}
	p("")
	p("| # | measurement (2,000 VMs, 100 hosts) | result | goal | |")
	p("|---|---|---|---|---|")
	p("| 1 | wall / critical-path lower bound | %.3f (%s / %s) | <= 1.10 | %s |", main.Ratio(), fmtDur(main.Wall), fmtDur(main.LowerBound.Total()), ok(main.Ratio() <= 1.10))
	p("| 2 | Nova requests per VM stopped | %.4f (%d stops + %d lists / %d VMs) | <= 1.05 | %s |", main.RequestsPerVM(), main.StopCalls, main.ListCalls, main.Stopped, ok(main.RequestsPerVM() <= 1.05))
	p("| 3 | POST /shutdown -> first os-stop at Nova | %s | < 50ms | %s |", fmtDur(main.FirstStop), ok(main.FirstStop < 50*time.Millisecond))
	if naive != nil {
		p("| 4 | naive serial baseline / ours | %.1fx (%s / %s; VMs %s est. from %d of %d, storage %s, hosts %s) | | |",
			naive.Total().Seconds()/main.Wall.Seconds(), fmtDur(naive.Total()), fmtDur(main.Wall),
			fmtDur(naive.VMs), naive.Sampled, naive.ToStop, fmtDur(naive.Storage), fmtDur(naive.Hosts))
	} else {
		p("| 4 | naive serial baseline / ours | skipped (BENCH_NAIVE_SAMPLE=0) | | |")
	}
	if l := loaded.Load; l != nil {
		p("| 5 | GET /shutdown/status under load during a shutdown | %s; that shutdown's ratio %.3f | >= 2000 req/s, p99 < 25ms | %s |",
			l, loaded.Ratio(), ok(l.RPS() >= 2000 && l.P99 < 25*time.Millisecond))
	}
	if r, found := byScale[10000]; found {
		p("| 6 | peak RSS of shutdownd, 10,000-VM shutdown | %.1f MiB | < 100 MiB | %s |", float64(r.PeakRSS)/(1<<20), ok(r.PeakRSS < 100<<20))
	}
	p("")
	p("| 7 | VMs | stopped | wall | lower bound | ratio | Nova req/VM | first os-stop | peak RSS |")
	p("|---|---|---|---|---|---|---|---|---|")
	for _, n := range scales {
		r := byScale[n]
		p("| | %d | %d | %s | %s | %.3f | %.4f | %s | %.1f MiB |", n, r.Stopped, fmtDur(r.Wall), fmtDur(r.LowerBound.Total()),
			r.Ratio(), r.RequestsPerVM(), fmtDur(r.FirstStop), float64(r.PeakRSS)/(1<<20))
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		// Other work on the machine shows here; the numbers above are only
		// comparable between quiet runs.
		p("")
		p("load average at the end (1, 5, 15 min): %s", strings.Join(strings.Fields(string(la))[:3], " "))
	}
	fmt.Print(w.String())
	b.ReportMetric(main.Ratio(), "wall/lowerbound")
	b.ReportMetric(main.RequestsPerVM(), "nova-req/vm")
	b.ReportMetric(float64(main.FirstStop.Microseconds())/1000, "first-stop-ms")
	if naive != nil {
		b.ReportMetric(naive.Total().Seconds()/main.Wall.Seconds(), "naive/ours")
	}
	if l := loaded.Load; l != nil {
		b.ReportMetric(l.RPS(), "status-req/s")
		b.ReportMetric(float64(l.P99.Microseconds())/1000, "status-p99-ms")
	}
}
