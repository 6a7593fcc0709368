package runner

import (
	"context"
	"reflect"
	"testing"

	"github.com/edgeops/shutdownd/store"
)

// callLog is an Observer, StoreObserver and Drainer that writes every call
// into a log shared by several of them, so a test sees the order.
type callLog struct {
	name    string
	log     *[]string
	pending int
}

func (c callLog) add(what string)                                     { *c.log = append(*c.log, c.name+" "+what) }
func (c callLog) JobStarted(context.Context, store.Job)               { c.add("started") }
func (c callLog) StepFinished(context.Context, store.Job, store.Step) { c.add("step") }
func (c callLog) JobFinished(context.Context, store.Job)              { c.add("finished") }
func (c callLog) PeerCall(peer, op string, err error)                 { c.add("peer " + peer + " " + op) }
func (c callLog) StoreWriteFailed()                                   { c.add("write-failed") }
func (c callLog) RecordsUnsaved(int)                                  { c.add("unsaved") }
func (c callLog) Drain(context.Context) int                           { c.add("drain"); return c.pending }

// plain is an Observer and nothing more: the fan-out gives it no store or
// drain calls.
type plain struct{ c callLog }

func (p plain) JobStarted(context.Context, store.Job)               { p.c.add("started") }
func (p plain) StepFinished(context.Context, store.Job, store.Step) { p.c.add("step") }
func (p plain) JobFinished(context.Context, store.Job)              { p.c.add("finished") }
func (p plain) PeerCall(peer, op string, err error)                 { p.c.add("peer " + peer + " " + op) }

// TestObserversFanOutInOrder: Observers calls each member in the order given,
// skips nil entries, and hands store and drain calls only to the members
// that take them, adding up what is still pending.
func TestObserversFanOutInOrder(t *testing.T) {
	var log []string
	a := callLog{name: "a", log: &log, pending: 2}
	b := callLog{name: "b", log: &log, pending: 1}
	p := plain{callLog{name: "p", log: &log}}
	o := Observers(nil, a, p, nil, b)
	ctx := context.Background()
	o.JobStarted(ctx, store.Job{})
	o.StepFinished(ctx, store.Job{}, store.Step{})
	o.PeerCall(PeerSSH, "dial", nil)
	o.JobFinished(ctx, store.Job{})
	o.(StoreObserver).StoreWriteFailed()
	o.(StoreObserver).RecordsUnsaved(3)
	if n := o.(Drainer).Drain(ctx); n != 3 {
		t.Errorf("pending after drain = %d, want 3 (2 + 1)", n)
	}
	want := []string{"a started", "p started", "b started", "a step", "p step", "b step",
		"a peer ssh dial", "p peer ssh dial", "b peer ssh dial", "a finished", "p finished", "b finished", "a write-failed", "b write-failed", "a unsaved", "b unsaved", "a drain", "b drain"}
	if !reflect.DeepEqual(log, want) {
		t.Errorf("calls = %q\nwant    %q", log, want)
	}
	if n := Observers().(Drainer).Drain(ctx); n != 0 {
		t.Errorf("an empty fan-out has %d pending", n)
	}
}
