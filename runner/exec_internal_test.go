package runner

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/edgeops/shutdownd/config"
	"github.com/edgeops/shutdownd/sitesim"
	"github.com/edgeops/shutdownd/store"
)

// internalExec starts the simulated site o (its Dir set here), a store on a
// real file and a runner over them, and returns an executor of a created
// shutdown job, built by hand so that a test can drive one piece of the
// runner (a phase of the VM step, a BMC link) without running the job.
func internalExec(t *testing.T, o sitesim.Options) (*sitesim.Site, *config.Config, *store.Store, *exec) {
	t.Helper()
	o.Dir = t.TempDir()
	site, err := sitesim.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Close)
	path, err := site.WriteConfig("127.0.0.1:0", filepath.Join(o.Dir, "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(context.Background(), cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	job, _, err := st.CreateShutdown(ctx, store.NewJob{Kind: store.KindShutdown})
	if err != nil {
		t.Fatal(err)
	}
	r := New(cfg, st, Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { r.journal.Close() })
	return site, cfg, st, &exec{r: r, job: job, ctx: ctx, log: r.log, jr: r.journal.Job(job.ID)}
}
