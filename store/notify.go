package store

import "sync"

// broadcaster wakes every subscriber after a commit. A subscriber's channel
// has room for one wake-up; further ones are dropped until it reads, so a
// slow SSE client never holds up the writer.
type broadcaster struct {
	mu   sync.Mutex
	next int
	subs map[int]chan struct{}
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: make(map[int]chan struct{})}
}

func (b *broadcaster) subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	b.mu.Lock()
	id := b.next
	b.next++
	b.subs[id] = ch
	b.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			b.mu.Lock()
			delete(b.subs, id)
			b.mu.Unlock()
		})
	}
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
