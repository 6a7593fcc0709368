package sitesim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Resource ids of the simulated BMC. They follow the DMTF
// public-rackmount1 mockup's shape: one system, one manager, one chassis.
const (
	rfSystemID  = "1"
	rfManagerID = "BMC"
	rfChassisID = "1U"

	rfRoot     = "/redfish/v1"
	rfSystem   = rfRoot + "/Systems/" + rfSystemID
	rfReset    = rfSystem + "/Actions/ComputerSystem.Reset"
	rfManager  = rfRoot + "/Managers/" + rfManagerID
	rfChassis  = rfRoot + "/Chassis/" + rfChassisID
	rfSessions = rfRoot + "/SessionService/Sessions"
)

// rfResetTypes are the ResetType values the simulated system accepts, in
// the order a real BMC (the DMTF mockup) announces them. gofish refuses to
// POST a reset type that is not in this list.
var rfResetTypes = []string{
	"On", "ForceOff", "GracefulShutdown", "GracefulRestart",
	"ForceRestart", "Nmi", "ForceOn", "PushPowerButton",
}

// RedfishOptions configures a simulated Redfish BMC.
type RedfishOptions struct {
	// Machine is the host this BMC controls; required.
	Machine *Machine
	// User and Password are the only accepted credentials.
	User, Password string
	// SoftOffDelay is how long the host OS takes to shut down after a
	// GracefulShutdown (ACPI power button) request.
	SoftOffDelay time.Duration
	// IgnoreSoftOff simulates a hung OS: GracefulShutdown is accepted and
	// recorded but the machine stays on, so callers must escalate to ForceOff.
	IgnoreSoftOff bool
	// IgnoreHardOff simulates a stuck power relay or a firmware fault:
	// ForceOff is accepted and recorded, and the machine stays on.
	IgnoreHardOff bool
	// Unreachable starts the BMC with its port closed (see SetReachable).
	Unreachable bool
	// Latency delays every response, to exercise client timeouts.
	Latency time.Duration
}

// RedfishBMC is an HTTPS Redfish service for one Machine, on 127.0.0.1 with
// a self-signed certificate, so the real bmclib/gofish client code is
// exercised end to end, certificate verification included.
type RedfishBMC struct {
	opts    RedfishOptions
	srv     *http.Server
	tlsConf *tls.Config
	certPEM []byte
	pool    *x509.CertPool
	port    int
	serving sync.WaitGroup

	mu         sync.Mutex
	ln         net.Listener // nil while unreachable
	conns      map[net.Conn]struct{}
	sessions   map[string]rfSession // by session id
	resets     []string
	powerReads int
	closed     bool
}

type rfSession struct {
	id, token, user string
}

// NewRedfishBMC starts a simulated BMC on 127.0.0.1 on a free port.
func NewRedfishBMC(opts RedfishOptions) (*RedfishBMC, error) {
	if opts.Machine == nil {
		return nil, errors.New("start redfish bmc: no machine")
	}
	cert, certPEM, err := selfSignedCert("sitesim BMC " + opts.Machine.Name)
	if err != nil {
		return nil, fmt.Errorf("start redfish bmc %s: %w", opts.Machine.Name, err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	b := &RedfishBMC{
		opts:     opts,
		tlsConf:  &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		certPEM:  certPEM,
		pool:     pool,
		conns:    map[net.Conn]struct{}{},
		sessions: map[string]rfSession{},
	}
	b.srv = &http.Server{
		Handler:           b.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		// Clients that reject our certificate make the server log a TLS
		// handshake error; that is an expected outcome in tests.
		ErrorLog:  log.New(io.Discard, "", 0),
		ConnState: b.trackConn,
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start redfish bmc %s: %w", opts.Machine.Name, err)
	}
	b.port = tcp.Addr().(*net.TCPAddr).Port
	if opts.Unreachable {
		tcp.Close()
		return b, nil
	}
	b.mu.Lock()
	b.serve(tcp)
	b.mu.Unlock()
	return b, nil
}

// serve starts serving on tcp; b.mu must be held.
func (b *RedfishBMC) serve(tcp net.Listener) {
	b.ln = tls.NewListener(tcp, b.tlsConf)
	b.serving.Add(1)
	go func(ln net.Listener) {
		defer b.serving.Done()
		_ = b.srv.Serve(ln)
	}(b.ln)
}

func (b *RedfishBMC) trackConn(c net.Conn, s http.ConnState) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch s {
	case http.StateNew:
		b.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(b.conns, c)
	}
}

// SetReachable opens or closes the BMC's port. While unreachable, new
// connections are refused and open ones are dropped, like a BMC whose
// network is down; the port is kept so the configuration stays valid.
func (b *RedfishBMC) SetReachable(up bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("set reachable: bmc closed")
	}
	if !up {
		if b.ln != nil {
			b.ln.Close()
			b.ln = nil
		}
		for c := range b.conns {
			c.Close()
		}
		return nil
	}
	if b.ln != nil {
		return nil
	}
	tcp, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)))
	if err != nil {
		return fmt.Errorf("reopen bmc port %d: %w", b.port, err)
	}
	b.serve(tcp)
	return nil
}

// Close stops the BMC and waits for its server to return.
func (b *RedfishBMC) Close() {
	b.mu.Lock()
	b.closed = true
	b.ln = nil
	b.mu.Unlock()
	b.srv.Close()
	b.serving.Wait()
}

// URL is the BMC's base URL, https://127.0.0.1:PORT.
func (b *RedfishBMC) URL() string {
	return "https://" + net.JoinHostPort(b.Host(), strconv.Itoa(b.port))
}

// Host is the address a client configuration names.
func (b *RedfishBMC) Host() string { return "127.0.0.1" }

// Port is the BMC's TCP port.
func (b *RedfishBMC) Port() int { return b.port }

// CertPEM is the BMC's self-signed certificate, to be written to a CA file
// so clients verify TLS instead of running insecure.
func (b *RedfishBMC) CertPEM() []byte { return slices.Clone(b.certPEM) }

// CertPool holds the BMC's certificate, for in-process clients.
func (b *RedfishBMC) CertPool() *x509.CertPool { return b.pool }

// Resets returns the ResetType values received, in order.
func (b *RedfishBMC) Resets() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.resets)
}

// PowerReads counts GETs of the ComputerSystem resource, which carries the
// PowerState; bmclib reads it for every power query and before every reset.
func (b *RedfishBMC) PowerReads() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.powerReads
}

// ActiveSessions counts open Redfish sessions, so tests can check that
// clients log out (real BMCs have few session slots).
func (b *RedfishBMC) ActiveSessions() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

func (b *RedfishBMC) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /redfish", func(w http.ResponseWriter, r *http.Request) {
		rfJSON(w, http.StatusOK, map[string]any{"v1": rfRoot + "/"})
	})
	mux.HandleFunc("GET /redfish/v1", b.serviceRoot)
	mux.HandleFunc("GET /redfish/v1/{$}", b.serviceRoot)
	mux.HandleFunc("POST "+rfSessions, b.login)
	mux.HandleFunc("GET "+rfRoot+"/SessionService", b.auth(b.sessionService))
	mux.HandleFunc("GET "+rfSessions, b.auth(b.sessionList))
	mux.HandleFunc("GET "+rfSessions+"/{id}", b.auth(b.sessionGet))
	mux.HandleFunc("DELETE "+rfSessions+"/{id}", b.auth(b.logout))
	mux.HandleFunc("GET "+rfRoot+"/Systems", b.auth(collection("ComputerSystemCollection", "Computer System Collection", rfRoot+"/Systems", rfSystem)))
	mux.HandleFunc("GET "+rfSystem, b.auth(b.system))
	mux.HandleFunc("POST "+rfReset, b.auth(b.reset))
	mux.HandleFunc("GET "+rfRoot+"/Managers", b.auth(collection("ManagerCollection", "Manager Collection", rfRoot+"/Managers", rfManager)))
	mux.HandleFunc("GET "+rfManager, b.auth(b.manager))
	mux.HandleFunc("GET "+rfRoot+"/Chassis", b.auth(collection("ChassisCollection", "Chassis Collection", rfRoot+"/Chassis", rfChassis)))
	mux.HandleFunc("GET "+rfChassis, b.auth(b.chassis))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		rfError(w, http.StatusNotFound, "Base.1.15.ResourceNotFound", "no resource at "+r.URL.Path)
	})
	return b.delay(mux)
}

// SetLatency changes the delay before every response from now on (a BMC
// that turns slow after the session was opened).
func (b *RedfishBMC) SetLatency(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opts.Latency = d
}

// delay applies the configured latency before every response.
func (b *RedfishBMC) delay(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		d := b.opts.Latency
		b.mu.Unlock()
		if d <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			next.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	})
}

// auth accepts a session token (X-Auth-Token) or HTTP basic credentials,
// as the Redfish spec requires of every resource but the service root.
func (b *RedfishBMC) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if tok := r.Header.Get("X-Auth-Token"); tok != "" && b.tokenValid(tok) {
			next(w, r)
			return
		}
		if u, p, ok := r.BasicAuth(); ok && b.credsValid(u, p) {
			next(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="Redfish"`)
		rfError(w, http.StatusUnauthorized, "Base.1.15.NoValidSession", "authentication required")
	}
}

func (b *RedfishBMC) tokenValid(tok string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.sessions {
		if subtle.ConstantTimeCompare([]byte(s.token), []byte(tok)) == 1 {
			return true
		}
	}
	return false
}

func (b *RedfishBMC) credsValid(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(b.opts.User))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(b.opts.Password))
	return u&p == 1
}

func (b *RedfishBMC) serviceRoot(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.type":    "#ServiceRoot.v1_15_0.ServiceRoot",
		"@odata.id":      rfRoot + "/",
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": "1.15.0",
		"UUID":           "92384634-2938-2342-8820-489239905423",
		"Systems":        rfLink(rfRoot + "/Systems"),
		"Chassis":        rfLink(rfRoot + "/Chassis"),
		"Managers":       rfLink(rfRoot + "/Managers"),
		"SessionService": rfLink(rfRoot + "/SessionService"),
		"Links":          map[string]any{"Sessions": rfLink(rfSessions)},
	})
}

func (b *RedfishBMC) sessionService(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.type":    "#SessionService.v1_1_8.SessionService",
		"@odata.id":      rfRoot + "/SessionService",
		"Id":             "SessionService",
		"Name":           "Session Service",
		"Status":         map[string]any{"State": "Enabled", "Health": "OK"},
		"ServiceEnabled": true,
		"SessionTimeout": 30,
		"Sessions":       rfLink(rfSessions),
	})
}

func (b *RedfishBMC) login(w http.ResponseWriter, r *http.Request) {
	var req struct{ UserName, Password string }
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		rfError(w, http.StatusBadRequest, "Base.1.15.MalformedJSON", "malformed session request")
		return
	}
	if !b.credsValid(req.UserName, req.Password) {
		rfError(w, http.StatusUnauthorized, "Base.1.15.InsufficientPrivilege", "invalid user name or password")
		return
	}
	s := rfSession{id: randomHex(8), token: randomHex(16), user: req.UserName}
	b.mu.Lock()
	b.sessions[s.id] = s
	b.mu.Unlock()
	w.Header().Set("X-Auth-Token", s.token)
	w.Header().Set("Location", rfSessions+"/"+s.id)
	rfJSON(w, http.StatusCreated, sessionBody(s))
}

func (b *RedfishBMC) sessionList(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	ids := make([]string, 0, len(b.sessions))
	for id := range b.sessions {
		ids = append(ids, rfSessions+"/"+id)
	}
	b.mu.Unlock()
	slices.Sort(ids)
	collection("SessionCollection", "Session Collection", rfSessions, ids...)(w, r)
}

func (b *RedfishBMC) sessionGet(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	s, ok := b.sessions[r.PathValue("id")]
	b.mu.Unlock()
	if !ok {
		rfError(w, http.StatusNotFound, "Base.1.15.ResourceNotFound", "no such session")
		return
	}
	rfJSON(w, http.StatusOK, sessionBody(s))
}

func (b *RedfishBMC) logout(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	b.mu.Lock()
	_, ok := b.sessions[id]
	delete(b.sessions, id)
	b.mu.Unlock()
	if !ok {
		rfError(w, http.StatusNotFound, "Base.1.15.ResourceNotFound", "no such session")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func sessionBody(s rfSession) map[string]any {
	return map[string]any{
		"@odata.type": "#Session.v1_6_0.Session",
		"@odata.id":   rfSessions + "/" + s.id,
		"Id":          s.id,
		"Name":        "User Session",
		"UserName":    s.user,
	}
}

func (b *RedfishBMC) system(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.powerReads++
	b.mu.Unlock()
	m := b.opts.Machine
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.type":  "#ComputerSystem.v1_20_0.ComputerSystem",
		"@odata.id":    rfSystem,
		"Id":           rfSystemID,
		"Name":         m.Name,
		"HostName":     m.Name,
		"SystemType":   "Physical",
		"Manufacturer": "sitesim",
		"Model":        "Simulated Rackmount",
		"Status":       map[string]any{"State": "Enabled", "Health": "OK"},
		"PowerState":   string(m.State()),
		"Links": map[string]any{
			"Chassis":   []any{rfLink(rfChassis)},
			"ManagedBy": []any{rfLink(rfManager)},
		},
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            rfReset,
				"ResetType@Redfish.AllowableValues": rfResetTypes,
			},
		},
	})
}

// reset applies a ComputerSystem.Reset to the Machine the way a real host
// reacts: GracefulShutdown asks the OS, which powers off after SoftOffDelay
// (or never, with IgnoreSoftOff); ForceOff cuts power at once.
func (b *RedfishBMC) reset(w http.ResponseWriter, r *http.Request) {
	var req struct{ ResetType string }
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		rfError(w, http.StatusBadRequest, "Base.1.15.MalformedJSON", "malformed reset request")
		return
	}
	if !slices.Contains(rfResetTypes, req.ResetType) {
		rfError(w, http.StatusBadRequest, "Base.1.15.ActionParameterValueNotInList",
			fmt.Sprintf("ResetType %q is not supported", req.ResetType))
		return
	}
	b.mu.Lock()
	b.resets = append(b.resets, req.ResetType)
	b.mu.Unlock()
	m := b.opts.Machine
	switch req.ResetType {
	case "GracefulShutdown":
		b.softOff()
	case "ForceOff":
		if !b.opts.IgnoreHardOff {
			m.SetState(PowerOff, "bmc-hard")
		}
	case "On", "ForceOn":
		m.SetState(PowerOn, "bmc-on")
	case "PushPowerButton":
		if m.State() == PowerOn {
			b.softOff()
		} else {
			m.SetState(PowerOn, "bmc-on")
		}
	}
	// Restarts and NMI leave a running machine running.
	w.WriteHeader(http.StatusNoContent)
}

func (b *RedfishBMC) softOff() {
	if b.opts.IgnoreSoftOff {
		return
	}
	b.opts.Machine.PowerOffAfter(b.opts.SoftOffDelay, "bmc-soft")
}

func (b *RedfishBMC) manager(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.type":     "#Manager.v1_17_0.Manager",
		"@odata.id":       rfManager,
		"Id":              rfManagerID,
		"Name":            "Manager",
		"ManagerType":     "BMC",
		"Model":           "sitesim BMC",
		"FirmwareVersion": "1.0.0",
		"PowerState":      "On",
		"Status":          map[string]any{"State": "Enabled", "Health": "OK"},
		"Links": map[string]any{
			"ManagerForServers": []any{rfLink(rfSystem)},
			"ManagerForChassis": []any{rfLink(rfChassis)},
		},
	})
}

func (b *RedfishBMC) chassis(w http.ResponseWriter, r *http.Request) {
	rfJSON(w, http.StatusOK, map[string]any{
		"@odata.type": "#Chassis.v1_22_0.Chassis",
		"@odata.id":   rfChassis,
		"Id":          rfChassisID,
		"Name":        "Computer System Chassis",
		"ChassisType": "RackMount",
		"PowerState":  string(b.opts.Machine.State()),
		"Status":      map[string]any{"State": "Enabled", "Health": "OK"},
		"Links": map[string]any{
			"ComputerSystems": []any{rfLink(rfSystem)},
			"ManagedBy":       []any{rfLink(rfManager)},
		},
	})
}

func collection(typ, name, id string, members ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		links := make([]any, 0, len(members))
		for _, m := range members {
			links = append(links, rfLink(m))
		}
		rfJSON(w, http.StatusOK, map[string]any{
			"@odata.type":         "#" + typ + "." + typ,
			"@odata.id":           id,
			"Name":                name,
			"Members@odata.count": len(links),
			"Members":             links,
		})
	}
}

func rfLink(id string) map[string]any { return map[string]any{"@odata.id": id} }

func rfJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// rfError writes a Redfish error object; the message never echoes what the
// client sent, so a credential cannot come back in an error.
func rfError(w http.ResponseWriter, status int, code, msg string) {
	rfJSON(w, status, map[string]any{
		"error": map[string]any{
			"code":    code,
			"message": msg,
			"@Message.ExtendedInfo": []any{map[string]any{
				"MessageId": code,
				"Message":   msg,
				"Severity":  "Critical",
			}},
		},
	})
}

func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(buf)
}

// selfSignedCert makes a CA-flagged certificate for 127.0.0.1, ::1 and
// localhost, so it can be used directly as the trust root of a client.
func selfSignedCert(cn string) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("generate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"sitesim"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("marshal key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load key pair: %w", err)
	}
	return cert, certPEM, nil
}
