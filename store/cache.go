package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"modernc.org/sqlite"
)

// Hot read paths: token verification and the status endpoints.
//
// A monitor or a UPS polling GET /shutdown/status during a shutdown used to
// cost two SQLite queries per request (the token by hash, the latest job of
// the kind), each parsed, planned and run anew: about 90 % of the request's
// CPU. The cache below answers both from memory and is exactly as fresh as
// the database, by this rule:
//
// Every request first takes a View: it reads PRAGMA data_version on a
// connection of the cache's own, which serves nothing else. SQLite
// changes that number whenever any other connection, in this process or in
// any other (`shutdownd token revoke`, an operator's sqlite3 shell), has
// committed since that connection's previous read. The read starts after the
// request arrived, so a commit that returned before the request arrived
// always shows up as a new number. Cached data is used only when it was
// loaded after a read of the same or a newer number: then nothing committed
// between the request's arrival and the load, so the cached state is one
// the database had during the request. Otherwise it is loaded again.
//
// The runner commits many times a second during a shutdown, and every commit
// moves data_version. The latest job is therefore reloaded at most once per
// commit (one indexed query, shared by all requests that see the same
// number). Tokens change rarely, so they are not reloaded per commit:
// migration 4 keeps a generation counter of the tokens table, bumped by
// triggers in the same transaction as any token insert, delete or change
// (last_used_at excepted), whoever the writer is. When data_version moved,
// one read of that counter (a single-row primary-key lookup on the same
// connection)
// tells whether the cached tokens are still valid; if it moved too, they are
// all dropped. Revocation and any other token change therefore take effect
// for the first request that arrives after the revoking commit returned,
// from any process, with no TTL. Expiry is not cached state: the caller
// compares ExpiresAt with the request's own time.
//
// Reading data_version is itself a small SQLite read transaction (two
// fcntl locks on the -shm file and a VDBE run, about 5 µs, a third of what
// is left of a status request). So View first reads the WAL-index header,
// the first 96 bytes of the -shm file, with one pread: SQLite rewrites that
// header on every commit (its iChange counter grows with each transaction;
// https://www.sqlite.org/walformat.html), whichever process commits, before
// the commit returns. When it is byte for byte what it was just before the
// last data_version read, nothing was committed since, and data_version
// still has that value; otherwise data_version is read again. The header
// bytes are taken before the data_version read they are paired with, so a
// commit in between can only make a later comparison fail, never succeed
// wrongly. The -shm file is used only when it is provably the one SQLite
// has mapped in this process (same inode among /proc/self/fd); elsewhere
// every View reads data_version.
//
// Why not a TTL, or invalidation from RevokeToken alone: a TTL lets a
// revoked token work for its length, and in-process invalidation misses the
// CLI, which revokes from another process. Why not read the token row on
// every request: that is the cost being removed (about 60 µs per request).
// Reading data_version costs a few microseconds, on a prepared statement
// that never reaches the parser.
//
// A read error on that connection makes the View direct (and a failed
// generation read makes that token lookup direct): the request then reads
// the database as before, so a cache problem can cost speed, never
// correctness. A read-only Store (OpenReadOnly) has no cache at all.

// maxCachedTokens bounds the token cache. Only tokens that exist are cached
// (an unknown hash is never stored), so this is a guard, not a policy.
const maxCachedTokens = 4096

// cache is the Store's in-memory copy of its hot read paths; see above.
type cache struct {
	// mu guards the dedicated connection and its prepared statements.
	mu      sync.Mutex
	conn    driver.Conn
	dvStmt  driver.Stmt // PRAGMA data_version
	genStmt driver.Stmt // the tokens generation
	closed  bool
	dest    []driver.Value
	tok     tokenCache
	jobs    [2]jobCache // simulation, shutdown
	// tokenLoaded, when set (tests only), runs between reading a token row
	// and storing it in the cache.
	tokenLoaded func()

	// shm is the database's -shm file, opened read-only, or nil when the
	// header fast path is off; hdr pairs its header with a data_version.
	shm *os.File
	hdr atomic.Pointer[walHeader]
}

// walHeaderSize covers the two copies of the WAL-index header at the start
// of the -shm file; the checkpoint information after them changes on reads
// (read marks) and is left out.
const walHeaderSize = 96

// walHeader is the WAL-index header as read just before a data_version
// read, and the value that read returned.
type walHeader struct {
	bytes   [walHeaderSize]byte
	version int64
}

type tokenCache struct {
	mu      sync.Mutex
	checked int64 // data_version at which gen was last compared
	gen     int64 // the tokens generation the entries belong to
	valid   bool  // gen and checked were set at least once
	epoch   uint64
	entries map[[32]byte]Token
}

type jobCache struct {
	mu  sync.Mutex               // held while reloading
	cur atomic.Pointer[jobEntry] // nil until the first load
}

// jobEntry is one immutable load of the latest job of a kind.
type jobEntry struct {
	version int64 // data_version read before the load
	job     *Job  // nil: no job of that kind yet
}

// openCache opens the dedicated connection of the cache. It must run after
// the migrations (the generation table is prepared here).
func openCache(ctx context.Context, path string) (*cache, error) {
	cn, err := sqlite.NewConnector(path + "?" + dsnParams + "&_query_only=1")
	if err != nil {
		return nil, err
	}
	conn, err := cn.Connect(ctx)
	if err != nil {
		return nil, err
	}
	c := &cache{conn: conn, dest: make([]driver.Value, 1)}
	c.tok.entries = make(map[[32]byte]Token)
	prep := conn.(driver.ConnPrepareContext)
	if c.dvStmt, err = prep.PrepareContext(ctx, `PRAGMA data_version`); err != nil {
		conn.Close()
		return nil, err
	}
	if c.genStmt, err = prep.PrepareContext(ctx, `SELECT gen FROM token_generation WHERE id = 1`); err != nil {
		c.dvStmt.Close()
		conn.Close()
		return nil, err
	}
	// A first read maps the -shm file in this connection, whatever the
	// other connections did.
	if _, err := c.readInt(c.dvStmt); err != nil {
		c.close()
		return nil, err
	}
	// SQLite names the -shm after the database file with symlinks resolved.
	if real, err := filepath.EvalSymlinks(path); err == nil {
		c.shm = openSQLiteShm(real + "-shm")
	}
	return c, nil
}

// openSQLiteShm opens the -shm file at shmPath read-only if SQLite has that
// very file open in this process, else returns nil. The check matters: a
// stray file of that name that SQLite does not use would never change.
func openSQLiteShm(shmPath string) *os.File {
	f, err := os.Open(shmPath)
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		f.Close()
		return nil
	}
	same := 0 // this f is one of them
	for _, fd := range fds {
		if other, err := os.Stat("/proc/self/fd/" + fd.Name()); err == nil && os.SameFile(fi, other) {
			same++
		}
	}
	if same < 2 {
		f.Close()
		return nil
	}
	return f
}

func (c *cache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var serr error
	if c.shm != nil {
		serr = c.shm.Close()
	}
	return errors.Join(c.dvStmt.Close(), c.genStmt.Close(), c.conn.Close(), serr)
}

// version returns the database's data_version as seen now (see the top of
// this file for the header fast path).
func (c *cache) version() (int64, error) {
	var hdr [walHeaderSize]byte
	fast := false
	if c.shm != nil {
		if n, err := c.shm.ReadAt(hdr[:], 0); err == nil && n == len(hdr) {
			fast = true
			if h := c.hdr.Load(); h != nil && h.bytes == hdr {
				return h.version, nil
			}
		}
	}
	v, err := c.readInt(c.dvStmt)
	if err != nil {
		return 0, err
	}
	if fast {
		c.hdr.Store(&walHeader{bytes: hdr, version: v})
	}
	return v, nil
}

// readInt runs a one-row, one-integer statement on the dedicated connection.
// The statement gets no context: its context watcher would cost more than the
// query, which reads the WAL index and one page at most.
func (c *cache) readInt(st driver.Stmt) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errors.New("store closed")
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(context.Background(), nil)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	if err := rows.Next(c.dest); err != nil {
		if err == io.EOF {
			return 0, errors.New("no row")
		}
		return 0, err
	}
	v, ok := c.dest[0].(int64)
	if !ok {
		return 0, fmt.Errorf("not an integer: %T", c.dest[0])
	}
	return v, nil
}

// View is the database as a request sees it: cached reads through a View are
// never older than the moment the View was taken (Store.View). Take one per
// request, when it arrives; a View kept for long serves what was current
// then, which is right for one request and wrong for a stream.
type View struct {
	s       *Store
	version int64 // data_version read by Store.View
	cached  bool  // false: every read goes to the database
}

// View reads the database's change counter and returns a View for one
// request. It never fails: when the counter cannot be read the View reads
// the database directly.
func (s *Store) View() View {
	if s.cache == nil {
		return View{s: s}
	}
	v, err := s.cache.version()
	if err != nil {
		return View{s: s}
	}
	return View{s: s, version: v, cached: true}
}

// DirectView returns a View that reads the database on every call, as if
// there were no cache (for benchmarks that compare the two).
func (s *Store) DirectView() View { return View{s: s} }

// Cached reports whether reads through v may be answered from memory.
func (v View) Cached() bool { return v.cached }

// TokenByHash is Store.TokenByHash answered from the token cache when the
// tokens are unchanged since the View's moment (see the top of this file).
// The Token's slices are shared with the cache and must not be modified.
// LastUsedAt may be older than the row's: touching a token does not
// invalidate the cache.
func (v View) TokenByHash(ctx context.Context, hash []byte) (Token, error) {
	if !v.cached || len(hash) != 32 {
		return v.s.TokenByHash(ctx, hash)
	}
	c := v.s.cache
	key := [32]byte(hash)
	tc := &c.tok
	tc.mu.Lock()
	if !tc.valid || v.version > tc.checked {
		// Another connection committed since the last check: reading the
		// generation now (after the View's data_version) tells whether
		// that touched the tokens.
		gen, err := c.readInt(c.genStmt)
		if err != nil {
			tc.mu.Unlock()
			return v.s.TokenByHash(ctx, hash)
		}
		if !tc.valid || gen != tc.gen {
			clear(tc.entries)
			tc.epoch++
			tc.gen = gen
		}
		tc.checked = max(tc.checked, v.version)
		tc.valid = true
	}
	if t, ok := tc.entries[key]; ok {
		tc.mu.Unlock()
		return t, nil
	}
	epoch := tc.epoch
	tc.mu.Unlock()

	t, err := v.s.TokenByHash(ctx, hash)
	if err != nil {
		return t, err
	}
	if c.tokenLoaded != nil {
		c.tokenLoaded()
	}
	tc.mu.Lock()
	// A clear since epoch was read means the tokens changed while this row
	// was being read: the row may predate the change, so it is not kept.
	if tc.epoch == epoch {
		if len(tc.entries) >= maxCachedTokens {
			clear(tc.entries)
			tc.epoch++
		}
		tc.entries[key] = t
	}
	tc.mu.Unlock()
	return t, nil
}

// LatestJob is Store.LatestJob answered from memory when nothing was
// committed since the cached copy was loaded. The Job is shared with the
// cache and other requests and must not be modified; while it stays current
// the same pointer is returned, so a caller may memoize what it derives
// from it by pointer.
func (v View) LatestJob(ctx context.Context, kind Kind) (*Job, error) {
	var jc *jobCache
	if v.cached {
		switch kind {
		case KindSimulation:
			jc = &v.s.cache.jobs[0]
		case KindShutdown:
			jc = &v.s.cache.jobs[1]
		}
	}
	if jc == nil {
		return v.s.LatestJob(ctx, kind)
	}
	if e := jc.cur.Load(); e != nil && e.version >= v.version {
		return e.job, nil
	}
	jc.mu.Lock()
	defer jc.mu.Unlock()
	// Requests that queued behind one reload share it.
	if e := jc.cur.Load(); e != nil && e.version >= v.version {
		return e.job, nil
	}
	j, err := v.s.LatestJob(ctx, kind)
	if err != nil {
		return nil, err
	}
	jc.cur.Store(&jobEntry{version: v.version, job: j})
	return j, nil
}
