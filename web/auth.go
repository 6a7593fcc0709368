package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/edgeops/shutdownd/handlers"
	"github.com/edgeops/shutdownd/store"
)

// cookieName holds the session id. The cookie is HttpOnly (no script reads
// it), SameSite=Strict (no other site can make the browser send it, which
// is the CSRF protection of the POST forms, together with the Origin check
// below), Path=/ and Secure under TLS.
const cookieName = "shutdownd_session"

// loginFailed is the one message of a refused login: it does not say whether
// the token was unknown, revoked, expired, lacked the read scope or came
// from the wrong network.
const loginFailed = "Login failed: the token is not valid for reading the history."

type ctxKey int

const sessionKey ctxKey = 0

// sessionFrom returns the session put in the context by requireSession.
func sessionFrom(ctx context.Context) store.Session {
	s, _ := ctx.Value(sessionKey).(store.Session)
	return s
}

// session returns the request's live session, or ErrNotFound.
func (w *Web) session(r *http.Request) (store.Session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return store.Session{}, store.ErrNotFound
	}
	s, err := w.store.SessionByHash(r.Context(), store.HashToken(c.Value), w.idle)
	if err != nil {
		return store.Session{}, err
	}
	if !slices.Contains(s.Scopes, handlers.ScopeRead) {
		return store.Session{}, store.ErrNotFound // the token lost its read scope
	}
	return s, nil
}

// page wraps an HTML page: security headers, and a session or a redirect to
// the login form that comes back here afterwards.
func (w *Web) page(h func(http.ResponseWriter, *http.Request)) http.Handler {
	return securityHeaders(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		s, err := w.session(r)
		if errors.Is(err, store.ErrNotFound) {
			http.Redirect(rw, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		if err != nil {
			w.serverError(rw, r, err)
			return
		}
		rw.Header().Set("Cache-Control", "no-store")
		h(rw, r.WithContext(context.WithValue(r.Context(), sessionKey, s)))
	}))
}

type loginData struct {
	base
	Next    string
	Message string
}

func (w *Web) handleLoginForm(rw http.ResponseWriter, r *http.Request) {
	securityHeaders(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Cache-Control", "no-store")
		w.render(rw, r, http.StatusOK, "login", loginData{base: base{Title: "Log in"}, Next: safeNext(r.URL.Query().Get("next"))})
	})).ServeHTTP(rw, r)
}

// handleLogin checks the token with the API's own authentication (so a
// login obeys revocation, expiry and the token's allowed networks exactly
// like an API call), requires the read scope, and starts a session. The
// token itself is never stored or logged; the cookie holds a random id
// whose hash is the session's key.
func (w *Web) handleLogin(rw http.ResponseWriter, r *http.Request) {
	securityHeaders(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Cache-Control", "no-store")
		if !w.sameOrigin(r) {
			w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeInvalidRequest, "cross-origin form refused: post it from this site's own page"))
			return
		}
		r.Body = http.MaxBytesReader(rw, r.Body, 8<<10)
		if err := r.ParseForm(); err != nil {
			w.render(rw, r, http.StatusBadRequest, "login", loginData{base: base{Title: "Log in"}, Message: loginFailed})
			return
		}
		next := safeNext(r.PostForm.Get("next"))
		secret := strings.TrimSpace(r.PostForm.Get("token"))
		caller, ok := w.checkToken(r, secret)
		if !ok {
			w.log.LogAttrs(r.Context(), slog.LevelInfo, "history login refused", slog.String("remote", r.RemoteAddr))
			w.render(rw, r, http.StatusUnauthorized, "login", loginData{base: base{Title: "Log in"}, Next: next, Message: loginFailed})
			return
		}
		id, err := store.NewSessionSecret()
		if err != nil {
			w.serverError(rw, r, err)
			return
		}
		if _, err := w.store.CreateSession(r.Context(), store.HashToken(id), caller.Token.ID, caller.RemoteAddr, w.maxAge); err != nil {
			w.serverError(rw, r, err)
			return
		}
		w.log.LogAttrs(r.Context(), slog.LevelInfo, "history login",
			slog.String("token", caller.Token.Name), slog.String("remote", caller.RemoteAddr))
		http.SetCookie(rw, &http.Cookie{
			Name: cookieName, Value: id, Path: "/", MaxAge: int(w.maxAge.Seconds()),
			HttpOnly: true, Secure: w.secure(r), SameSite: http.SameSiteStrictMode,
		})
		http.Redirect(rw, r, next, http.StatusSeeOther)
	})).ServeHTTP(rw, r)
}

// checkToken runs the API's RequireScope(read) on a copy of the request
// carrying the token as the auth-token header.
func (w *Web) checkToken(r *http.Request, secret string) (handlers.Caller, bool) {
	if secret == "" {
		return handlers.Caller{}, false
	}
	probe := r.Clone(r.Context())
	probe.Header = r.Header.Clone()
	probe.Header.Del("Authorization")
	probe.Header.Set("auth-token", secret)
	probe.Body = http.NoBody
	var (
		caller handlers.Caller
		ok     bool
	)
	w.api.RequireScope(handlers.ScopeRead, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		caller, ok = handlers.CallerFrom(r.Context())
	})).ServeHTTP(discardWriter{}, probe)
	return caller, ok
}

// handleLogout ends the session and clears the cookie.
func (w *Web) handleLogout(rw http.ResponseWriter, r *http.Request) {
	securityHeaders(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !w.sameOrigin(r) {
			w.api.WriteError(rw, r, handlers.Errorf(handlers.CodeInvalidRequest, "cross-origin form refused: post it from this site's own page"))
			return
		}
		if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
			if err := w.store.DeleteSession(r.Context(), store.HashToken(c.Value)); err != nil {
				w.serverError(rw, r, err)
				return
			}
		}
		http.SetCookie(rw, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1,
			HttpOnly: true, Secure: w.secure(r), SameSite: http.SameSiteStrictMode})
		http.Redirect(rw, r, "/login", http.StatusSeeOther)
	})).ServeHTTP(rw, r)
}

// sameOrigin refuses a form posted from another origin. SameSite=Strict
// already keeps the session cookie off such requests; this also stops
// login CSRF (logging a victim in under the attacker's token). Browsers
// send Origin on every POST; a request without it (curl) is allowed.
//
// Behind a trusted proxy (handlers' trusted_proxies) the public host the
// browser used arrives as X-Forwarded-Host, and r.Host may be the proxy's
// upstream address: either is this site.
func (w *Web) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" {
		return false
	}
	if u.Host == r.Host {
		return true
	}
	fh := forwarded(r, "X-Forwarded-Host")
	return fh != "" && w.api.FromTrustedProxy(r) && strings.EqualFold(u.Host, fh)
}

// secure reports whether the browser reached us over HTTPS: our own TLS, or
// a trusted TLS proxy that says so (X-Forwarded-Proto: https). The session
// cookie is then marked Secure.
func (w *Web) secure(r *http.Request) bool {
	return w.tls || (w.api.FromTrustedProxy(r) && strings.EqualFold(forwarded(r, "X-Forwarded-Proto"), "https"))
}

// forwarded returns the last value of an X-Forwarded-* header, the one our
// trusted proxy wrote (a proxy that appends keeps what came before it, which
// a client may have written).
func forwarded(r *http.Request, name string) string {
	vs := r.Header.Values(name)
	if len(vs) == 0 {
		return ""
	}
	v := vs[len(vs)-1]
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}

// safeNext keeps a post-login redirect on this site: a local absolute path,
// never "//host" or a scheme. Control characters and spaces are refused
// outright: browsers strip tabs and newlines from a URL, so "/\t/evil.example"
// would become "//evil.example", another site.
func safeNext(next string) string {
	const home = "/" // the overview
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, `\`) {
		return home
	}
	for _, c := range next {
		if c <= ' ' || c == 0x7f {
			return home
		}
	}
	if u, err := url.Parse(next); err != nil || u.Scheme != "" || u.Host != "" || strings.HasPrefix(u.Path, "//") {
		return home
	}
	return next
}

// discardWriter swallows the API's error answer to a login probe.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
