package sitesim

import (
	"cmp"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

// Nova defaults, chosen to match a stock DevStack so that clouds.yaml written
// for the simulator looks like one written for a real site.
const (
	defaultNovaUser       = "admin"
	defaultNovaPassword   = "sim-secret"
	defaultNovaProject    = "admin"
	defaultNovaDomain     = "Default"
	defaultNovaPageSize   = 1000 // Nova's [api] max_limit
	novaDefaultRetryAfter = "1"
	novaRegion            = "RegionOne"
	novaTokenTTL          = time.Hour
	keystoneTimeFormat    = "2006-01-02T15:04:05.000000Z"
	novaLaunchedFormat    = "2006-01-02T15:04:05.000000"
)

// VM is one simulated Nova server. Status is the Nova status ("ACTIVE",
// "SHUTOFF", "ERROR", "PAUSED", ...); empty means ACTIVE.
type VM struct {
	ID      string
	Name    string
	Project string // project name; unknown names are added to the projects
	Status  string
	// StopDelay is how long the guest takes to shut down after os-stop.
	StopDelay time.Duration
	// NeverStops makes a guest that ignores the ACPI shutdown: os-stop is
	// accepted, task_state clears after StopDelay, the status stays as it was.
	NeverStops bool
	// Host is the compute host the VM runs on (OS-EXT-SRV-ATTR:host); its
	// nova-compute service must be up for an os-start to complete (see
	// Nova.SetComputeService). Empty: a generated name whose service is
	// always up.
	Host string
	// StartDelay is how long the guest takes to boot after os-start once
	// its compute service is up; 0 means StopDelay.
	StartDelay time.Duration
}

// NovaOptions shapes the simulated cloud: its content, its credentials and
// how badly it behaves.
type NovaOptions struct {
	Projects []string
	VMs      []VM
	// Latency is added to every request, Keystone included.
	Latency time.Duration
	// FailRate is the share (0..1) of authenticated Nova requests answered
	// 500 or 503 without any effect.
	FailRate float64
	// RateLimit429 is the share (0..1) of authenticated Nova requests answered
	// 429 with a Retry-After header of RetryAfter (default "1").
	RateLimit429 float64
	RetryAfter   string
	// PageSize is Nova's max_limit: the page size when the client sends no
	// limit, and the cap when it does. Default 1000.
	PageSize int
	// Credentials; defaults admin / sim-secret / project admin / domain Default.
	Username, Password, ProjectName, DomainName string
	// AppCredentialID and AppCredentialSecret, when set, are an application
	// credential of Username on ProjectName, accepted by id (or by name,
	// AppCredentialName, with the user), as openrc files of application
	// credentials use them.
	AppCredentialID, AppCredentialName, AppCredentialSecret string
	// TokenTTL is how long an issued token is valid (Keystone's expires_at);
	// default one hour, Keystone's default.
	TokenTTL time.Duration
	// Seed makes fault injection reproducible.
	Seed int64
}

// Nova is a Keystone v3 + Nova v2.1 API on 127.0.0.1, enough of it that an
// unmodified gophercloud client authenticates from clouds.yaml, pages through
// all servers of all projects and stops them. It counts what it is asked so
// tests and benchmarks can check the load a shutdown puts on the API.
type Nova struct {
	opts NovaOptions

	ln   net.Listener
	srv  *http.Server
	base string

	mu        sync.Mutex
	rng       *mrand.Rand
	latency   time.Duration
	closed    bool
	vms       []*novaVM
	byID      map[string]*novaVM
	projects  map[string]string // name -> id
	projNames map[string]string // id -> name
	tokens    map[string]novaToken
	stopsByID map[string]int
	// stopTimes and shutoffAt let crash tests prove that no os-stop ever
	// reached a server after it was SHUTOFF.
	stopTimes map[string][]time.Time
	shutoffAt map[string]time.Time
	requests  int
	lists     int
	shows     int
	stops     int
	faults    int
	auths     int
	logins    []Login
	firstStop time.Time
	// compute holds the nova-compute services (nova_start.go).
	compute computeServices
}

// Login is one POST /v3/auth/tokens, as Keystone's lockout counts them: a
// refused one is a failed authentication of the account.
type Login struct {
	At     time.Time
	Method string // password, application_credential, token
	OK     bool
}

type novaVM struct {
	VM
	projectID string
	taskState string // "" is JSON null
	created   time.Time
	updated   time.Time
	index     int
	gen       int // bumped on every state change, so stale stop timers do nothing
	timer     *time.Timer
	// awaitsCompute: an os-start accepted while the VM's compute service
	// was down; it completes once the service is up.
	awaitsCompute bool
}

type novaToken struct {
	projectID string
	expires   time.Time
	issued    time.Time
}

// NewNova prepares a simulated cloud; Start makes it listen.
func NewNova(opts NovaOptions) *Nova {
	if opts.Username == "" {
		opts.Username = defaultNovaUser
	}
	if opts.Password == "" {
		opts.Password = defaultNovaPassword
	}
	if opts.ProjectName == "" {
		opts.ProjectName = defaultNovaProject
	}
	if opts.DomainName == "" {
		opts.DomainName = defaultNovaDomain
	}
	if opts.PageSize <= 0 {
		opts.PageSize = defaultNovaPageSize
	}
	if opts.RetryAfter == "" {
		opts.RetryAfter = novaDefaultRetryAfter
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = novaTokenTTL
	}
	n := &Nova{
		opts:      opts,
		rng:       mrand.New(mrand.NewPCG(uint64(opts.Seed), uint64(opts.Seed)^0x9e3779b97f4a7c15)),
		latency:   opts.Latency,
		byID:      map[string]*novaVM{},
		projects:  map[string]string{},
		projNames: map[string]string{},
		tokens:    map[string]novaToken{},
		stopsByID: map[string]int{},
		stopTimes: map[string][]time.Time{},
		shutoffAt: map[string]time.Time{},
	}
	n.addProject(opts.ProjectName)
	for _, p := range opts.Projects {
		n.addProject(p)
	}
	epoch := time.Date(2024, 3, 1, 8, 0, 0, 0, time.UTC)
	for i, v := range opts.VMs {
		if v.ID == "" {
			v.ID = novaUUID(n.rng)
		}
		if _, dup := n.byID[v.ID]; dup {
			continue
		}
		if v.Project == "" {
			v.Project = opts.ProjectName
		}
		if v.Status == "" {
			v.Status = "ACTIVE"
		}
		v.Status = strings.ToUpper(v.Status)
		created := epoch.Add(time.Duration(i) * 37 * time.Minute)
		vm := &novaVM{VM: v, projectID: n.addProject(v.Project), created: created, updated: created, index: i}
		n.vms = append(n.vms, vm)
		n.byID[v.ID] = vm
	}
	return n
}

func (n *Nova) addProject(name string) string {
	if id, ok := n.projects[name]; ok {
		return id
	}
	id := novaStableID("project", name)
	n.projects[name] = id
	n.projNames[id] = name
	return id
}

// novaStableID derives a Keystone-style 32-hex id from a name, so project and
// user ids are the same on every run.
func novaStableID(kind, name string) string {
	sum := sha256.Sum256([]byte(kind + ":" + name))
	return hex.EncodeToString(sum[:16])
}

func novaUUID(r *mrand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Start listens on 127.0.0.1 on a free port and serves until Close.
func (n *Nova) Start() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen nova: %w", err)
	}
	n.ln = ln
	n.base = "http://" + ln.Addr().String()
	n.srv = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = n.srv.Serve(ln) }()
	return nil
}

// URL is the server's base, e.g. http://127.0.0.1:41234.
func (n *Nova) URL() string { return n.base }

// AuthURL is the Keystone v3 endpoint that goes into clouds.yaml.
func (n *Nova) AuthURL() string { return n.base + "/identity/v3" }

// Close stops serving and cancels pending guest shutdowns.
func (n *Nova) Close() {
	n.mu.Lock()
	n.closed = true
	for _, vm := range n.vms {
		if vm.timer != nil {
			vm.timer.Stop()
		}
	}
	n.mu.Unlock()
	if n.srv != nil {
		_ = n.srv.Close()
	}
}

// ProjectID returns the id the simulator gives a project name (tenant_id in
// server bodies).
func (n *Nova) ProjectID(name string) string { return novaStableID("project", name) }

// CloudsYAML returns a clouds.yaml declaring this cloud under cloudName, with
// the password inline, as an operator would write it.
func (n *Nova) CloudsYAML(cloudName string) string {
	type auth struct {
		AuthURL           string `yaml:"auth_url"`
		Username          string `yaml:"username"`
		Password          string `yaml:"password"`
		ProjectName       string `yaml:"project_name"`
		UserDomainName    string `yaml:"user_domain_name"`
		ProjectDomainName string `yaml:"project_domain_name"`
	}
	type cloud struct {
		Auth               auth   `yaml:"auth"`
		RegionName         string `yaml:"region_name"`
		Interface          string `yaml:"interface"`
		IdentityAPIVersion int    `yaml:"identity_api_version"`
	}
	n.mu.Lock()
	password := n.opts.Password
	n.mu.Unlock()
	doc := map[string]map[string]cloud{"clouds": {cloudName: {
		Auth: auth{
			AuthURL: n.AuthURL(), Username: n.opts.Username, Password: password,
			ProjectName: n.opts.ProjectName, UserDomainName: n.opts.DomainName, ProjectDomainName: n.opts.DomainName,
		},
		RegionName: novaRegion, Interface: "public", IdentityAPIVersion: 3,
	}}}
	out, err := yaml.Marshal(doc)
	if err != nil {
		panic(fmt.Sprintf("marshal clouds.yaml: %v", err)) // plain structs of strings cannot fail
	}
	return string(out)
}

// SetLatency changes the per-request latency while running (timeout tests).
func (n *Nova) SetLatency(d time.Duration) {
	n.mu.Lock()
	n.latency = d
	n.mu.Unlock()
}

// ExpireTokens invalidates every issued token, as a Keystone restart or token
// expiry would; clients must re-authenticate.
func (n *Nova) ExpireTokens() {
	n.mu.Lock()
	n.tokens = map[string]novaToken{}
	n.mu.Unlock()
}

// SetPassword rotates the user's password: from now on the old one is
// refused with 401, as Keystone refuses it after a rotation. Tokens already
// issued stay valid until they expire.
func (n *Nova) SetPassword(p string) {
	n.mu.Lock()
	n.opts.Password = p
	n.mu.Unlock()
}

// SetTokenTTL changes the lifetime of the tokens issued from now on.
func (n *Nova) SetTokenTTL(d time.Duration) {
	n.mu.Lock()
	n.opts.TokenTTL = d
	n.mu.Unlock()
}

// Logins returns every authentication request received (password,
// application credential or token method), oldest first.
func (n *Nova) Logins() []Login {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Login(nil), n.logins...)
}

// OpenrcEnv returns the OS_* variables an openrc file for this cloud sets
// (password authentication, or the application credential when appCred is
// true and one is configured), with the password inline as such files have
// it.
func (n *Nova) OpenrcEnv(appCred bool) map[string]string {
	env := map[string]string{
		"OS_AUTH_URL": n.AuthURL(), "OS_REGION_NAME": novaRegion, "OS_INTERFACE": "public",
		"OS_IDENTITY_API_VERSION": "3",
	}
	if appCred && n.opts.AppCredentialSecret != "" {
		env["OS_AUTH_TYPE"] = "v3applicationcredential"
		env["OS_APPLICATION_CREDENTIAL_ID"] = n.opts.AppCredentialID
		env["OS_APPLICATION_CREDENTIAL_SECRET"] = n.opts.AppCredentialSecret
		return env
	}
	n.mu.Lock()
	env["OS_PASSWORD"] = n.opts.Password
	n.mu.Unlock()
	env["OS_USERNAME"] = n.opts.Username
	env["OS_PROJECT_NAME"] = n.opts.ProjectName
	env["OS_USER_DOMAIN_NAME"] = n.opts.DomainName
	env["OS_PROJECT_DOMAIN_NAME"] = n.opts.DomainName
	return env
}

// StopRequests counts authenticated os-stop POSTs, including those answered
// with an injected fault.
func (n *Nova) StopRequests() int { n.mu.Lock(); defer n.mu.Unlock(); return n.stops }

// StopRequestsFor counts authenticated os-stop POSTs for one server id.
func (n *Nova) StopRequestsFor(id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stopsByID[id]
}

// StopTimesFor returns when each os-stop POST for one server id arrived,
// oldest first.
func (n *Nova) StopTimesFor(id string) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]time.Time(nil), n.stopTimes[id]...)
}

// ShutoffAt returns when an os-stop took a server to SHUTOFF (zero if none
// did; a server SHUTOFF from the start has no time).
func (n *Nova) ShutoffAt(id string) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.shutoffAt[id]
}

// ListRequests counts authenticated server list requests (one per page),
// including those answered with an injected fault.
func (n *Nova) ListRequests() int { n.mu.Lock(); defer n.mu.Unlock(); return n.lists }

// ShowRequests counts authenticated GET /servers/{id} requests.
func (n *Nova) ShowRequests() int { n.mu.Lock(); defer n.mu.Unlock(); return n.shows }

// Requests counts every HTTP request received, Keystone included.
func (n *Nova) Requests() int { n.mu.Lock(); defer n.mu.Unlock(); return n.requests }

// Faults counts injected 500/503/429 answers.
func (n *Nova) Faults() int { n.mu.Lock(); defer n.mu.Unlock(); return n.faults }

// Auths counts tokens issued (password or token method), so tests can see a
// re-authentication.
func (n *Nova) Auths() int { n.mu.Lock(); defer n.mu.Unlock(); return n.auths }

// FirstStopAt is when the first os-stop was accepted (zero if none was).
func (n *Nova) FirstStopAt() time.Time { n.mu.Lock(); defer n.mu.Unlock(); return n.firstStop }

// Servers returns a snapshot of all VMs with their current Status.
func (n *Nova) Servers() []VM {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]VM, len(n.vms))
	for i, vm := range n.vms {
		out[i] = vm.VM
	}
	return out
}

// Status returns a server's current status ("" if unknown).
func (n *Nova) Status(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if vm, ok := n.byID[id]; ok {
		return vm.Status
	}
	return ""
}

// interruptLocked returns server id with whatever was pending on it (a
// stop or a task finishing) called off, or nil; n.mu is held.
func (n *Nova) interruptLocked(id string) *novaVM {
	vm, ok := n.byID[id]
	if !ok {
		return nil
	}
	if vm.timer != nil {
		vm.timer.Stop()
		vm.timer = nil
	}
	vm.gen++
	return vm
}

// SetStatus forces a server's status, clearing any task in progress (an
// operator or a test acting behind the client's back).
func (n *Nova) SetStatus(id, status string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	vm := n.interruptLocked(id)
	if vm == nil {
		return
	}
	vm.Status = strings.ToUpper(status)
	vm.taskState = ""
	vm.updated = time.Now().UTC()
}

// Delete removes a server, as a user deleting it would: it is no longer
// listed, and os-stop answers 404.
func (n *Nova) Delete(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	vm := n.interruptLocked(id)
	if vm == nil {
		return
	}
	delete(n.byID, id)
	n.vms = slices.DeleteFunc(n.vms, func(v *novaVM) bool { return v == vm })
}

// SetTask starts a task of Nova's own on a server (task_state, e.g.
// "pausing" or "rebooting"), as another user or Nova itself would: os-stop
// answers 409 while it runs. After d the task ends and the server's status
// becomes then. SetTask(id, "", 0, status) ends a task at once.
func (n *Nova) SetTask(id, task string, d time.Duration, then string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	vm := n.interruptLocked(id)
	if vm == nil {
		return
	}
	gen := vm.gen
	vm.taskState = task
	vm.updated = time.Now().UTC()
	vm.timer = time.AfterFunc(d, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed || vm.gen != gen {
			return
		}
		vm.timer = nil
		vm.taskState = ""
		vm.Status = strings.ToUpper(then)
		vm.gen++
		vm.updated = time.Now().UTC()
	})
}

// GenerateVMs returns perProject VMs in each project with names such as a
// real site has (web-03, k8s-worker-12, "Ubuntu 22.04 dev", ci_runner_7) and
// stop delays uniform in [minDelay, maxDelay]. Statuses are mixed, as on a
// real site: about 88% ACTIVE, 8% SHUTOFF, 3% ERROR, 1% PAUSED. The same
// seed gives the same VMs.
func GenerateVMs(projects []string, perProject int, seed int64, minDelay, maxDelay time.Duration) []VM {
	r := mrand.New(mrand.NewPCG(uint64(seed), 0x5eed))
	patterns := []string{
		"web-%02d", "api-%02d", "db-primary-%d", "db-replica-%d", "k8s-master-%d",
		"k8s-worker-%02d", "gitlab-runner-%d", "jenkins-agent-%d", "kafka-broker-%d",
		"redis-cache-%d", "elk-node-%d", "prometheus-%d", "grafana-%d", "bastion-%d",
		"vpn-gw-%d", "rabbitmq-%d", "ci_runner_%d", "Ubuntu 22.04 dev %d", "win2019-ad-%d",
		"test-vm-%d", "cam-ingest-%03d", "edge-inference-%02d", "mqtt-%d", "ntp-%d",
	}
	var vms []VM
	for _, p := range projects {
		used := map[string]bool{}
		for i := 0; i < perProject; i++ {
			var name string
			for k := 1; ; k++ {
				name = fmt.Sprintf(patterns[r.IntN(len(patterns))], r.IntN(20*k)+1)
				if !used[name] {
					break
				}
			}
			used[name] = true
			status := "ACTIVE"
			switch x := r.IntN(100); {
			case x < 8:
				status = "SHUTOFF"
			case x < 11:
				status = "ERROR"
			case x < 12:
				status = "PAUSED"
			}
			delay := minDelay
			if maxDelay > minDelay {
				delay += time.Duration(r.Int64N(int64(maxDelay - minDelay + 1)))
			}
			vms = append(vms, VM{ID: novaUUID(r), Name: name, Project: p, Status: status, StopDelay: delay})
		}
	}
	return vms
}

// ---- HTTP ----

func (n *Nova) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /identity", n.identityVersions)
	mux.HandleFunc("GET /identity/{$}", n.identityVersions)
	mux.HandleFunc("GET /identity/v3", n.identityV3)
	mux.HandleFunc("GET /identity/v3/{$}", n.identityV3)
	mux.HandleFunc("POST /identity/v3/auth/tokens", n.createToken)
	mux.HandleFunc("GET /identity/v3/auth/tokens", n.validateToken)
	mux.HandleFunc("GET /compute", n.computeVersions)
	mux.HandleFunc("GET /compute/{$}", n.computeVersions)
	mux.HandleFunc("GET /compute/v2.1", n.computeV21)
	mux.HandleFunc("GET /compute/v2.1/{$}", n.computeV21)
	mux.HandleFunc("GET /compute/v2.1/servers/detail", n.authed(n.listServers(true)))
	mux.HandleFunc("GET /compute/v2.1/servers", n.authed(n.listServers(false)))
	mux.HandleFunc("GET /compute/v2.1/servers/{id}", n.authed(n.showServer))
	mux.HandleFunc("POST /compute/v2.1/servers/{id}/action", n.authed(n.serverAction))
	mux.HandleFunc("GET /compute/v2.1/os-services", n.authed(n.listServices))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		novaError(w, http.StatusNotFound, "The resource could not be found.")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.requests++
		lat := n.latency
		n.mu.Unlock()
		if lat > 0 {
			t := time.NewTimer(lat)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		w.Header().Set("X-Openstack-Request-Id", "req-"+novaRandomHex(16))
		mux.ServeHTTP(w, r)
	})
}

func novaRandomHex(nbytes int) string {
	b := make([]byte, nbytes)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func novaJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// keystoneError writes Keystone's error body.
func keystoneError(w http.ResponseWriter, code int, title, msg string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Keystone uri="/identity"`)
	}
	novaJSON(w, code, map[string]any{"error": map[string]any{"code": code, "title": title, "message": msg}})
}

// novaFaultNames is Nova's wsgi Fault naming: the body's single key.
var novaFaultNames = map[int]string{
	400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound",
	405: "badMethod", 409: "conflictingRequest", 413: "overLimit", 429: "overLimit",
	501: "notImplemented", 503: "serviceUnavailable",
}

func novaError(w http.ResponseWriter, code int, msg string) {
	name, ok := novaFaultNames[code]
	if !ok {
		name = "computeFault"
	}
	novaJSON(w, code, map[string]any{name: map[string]any{"code": code, "message": msg}})
}

func (n *Nova) identityVersions(w http.ResponseWriter, r *http.Request) {
	novaJSON(w, http.StatusMultipleChoices, map[string]any{"versions": map[string]any{"values": []any{n.v3Doc()}}})
}

func (n *Nova) identityV3(w http.ResponseWriter, r *http.Request) {
	novaJSON(w, http.StatusOK, map[string]any{"version": n.v3Doc()})
}

func (n *Nova) v3Doc() map[string]any {
	return map[string]any{
		"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
		"links":       []any{map[string]string{"rel": "self", "href": n.base + "/identity/v3/"}},
		"media-types": []any{map[string]string{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}},
	}
}

func (n *Nova) computeVersions(w http.ResponseWriter, r *http.Request) {
	novaJSON(w, http.StatusOK, map[string]any{"versions": []any{n.v21Doc()}})
}

func (n *Nova) computeV21(w http.ResponseWriter, r *http.Request) {
	novaJSON(w, http.StatusOK, map[string]any{"version": n.v21Doc()})
}

func (n *Nova) v21Doc() map[string]any {
	return map[string]any{
		"id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
		"updated": "2013-07-23T11:33:21Z",
		"links":   []any{map[string]string{"rel": "self", "href": n.base + "/compute/v2.1/"}},
		"media-types": []any{map[string]string{
			"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1",
		}},
	}
}

type keystoneDomain struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type ksAuthRequest struct {
	Auth struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password *struct {
				User struct {
					ID       string          `json:"id"`
					Name     string          `json:"name"`
					Password string          `json:"password"`
					Domain   *keystoneDomain `json:"domain"`
				} `json:"user"`
			} `json:"password"`
			Token *struct {
				ID string `json:"id"`
			} `json:"token"`
			AppCred *struct {
				ID     string `json:"id"`
				Name   string `json:"name"`
				Secret string `json:"secret"`
				User   *struct {
					ID     string          `json:"id"`
					Name   string          `json:"name"`
					Domain *keystoneDomain `json:"domain"`
				} `json:"user"`
			} `json:"application_credential"`
		} `json:"identity"`
		Scope json.RawMessage `json:"scope"`
	} `json:"auth"`
}

type ksAuthScope struct {
	Project *struct {
		ID     string          `json:"id"`
		Name   string          `json:"name"`
		Domain *keystoneDomain `json:"domain"`
	} `json:"project"`
}

const keystoneUnauthorized = "The request you have made requires authentication."

func (n *Nova) domainID() string {
	if n.opts.DomainName == defaultNovaDomain {
		return "default"
	}
	return novaStableID("domain", n.opts.DomainName)
}

func (n *Nova) domainMatches(d *keystoneDomain) bool {
	if d == nil {
		return false
	}
	return d.Name == n.opts.DomainName || d.ID == n.domainID()
}

func (n *Nova) createToken(w http.ResponseWriter, r *http.Request) {
	var req ksAuthRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		keystoneError(w, http.StatusBadRequest, "Bad Request", "Expecting to find auth in request body.")
		return
	}
	method, ok := n.authenticate(req)
	n.mu.Lock()
	n.logins = append(n.logins, Login{At: time.Now(), Method: method, OK: ok})
	n.mu.Unlock()
	if !ok {
		keystoneError(w, http.StatusUnauthorized, "Unauthorized", keystoneUnauthorized)
		return
	}
	projectID := ""
	if method == "application_credential" {
		// An application credential is bound to its project: Keystone
		// refuses a scope in the request and scopes the token itself.
		if len(req.Auth.Scope) > 0 && string(req.Auth.Scope) != "null" {
			keystoneError(w, http.StatusUnauthorized, "Unauthorized", keystoneUnauthorized)
			return
		}
		n.mu.Lock()
		projectID = n.projects[n.opts.ProjectName]
		n.mu.Unlock()
	} else if len(req.Auth.Scope) > 0 && string(req.Auth.Scope) != "null" {
		var sc ksAuthScope
		if err := json.Unmarshal(req.Auth.Scope, &sc); err != nil {
			keystoneError(w, http.StatusBadRequest, "Bad Request", "Invalid scope.")
			return
		}
		if sc.Project != nil {
			n.mu.Lock()
			switch {
			case sc.Project.ID != "":
				if _, known := n.projNames[sc.Project.ID]; known {
					projectID = sc.Project.ID
				}
			case n.domainMatches(sc.Project.Domain):
				projectID = n.projects[sc.Project.Name]
			}
			n.mu.Unlock()
			if projectID == "" {
				keystoneError(w, http.StatusUnauthorized, "Unauthorized", keystoneUnauthorized)
				return
			}
		}
	}
	now := time.Now().UTC()
	secret := "gAAAAA" + novaRandomHex(32)
	n.mu.Lock()
	tok := novaToken{projectID: projectID, issued: now, expires: now.Add(n.opts.TokenTTL)}
	n.tokens[secret] = tok
	n.auths++
	n.mu.Unlock()
	w.Header().Set("X-Subject-Token", secret)
	novaJSON(w, http.StatusCreated, n.tokenBody(tok, method))
}

// authenticate checks the identity of a token request: the method used and
// whether Keystone would accept it.
func (n *Nova) authenticate(req ksAuthRequest) (method string, ok bool) {
	id := req.Auth.Identity
	n.mu.Lock()
	o := n.opts
	n.mu.Unlock()
	same := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	switch {
	case novaContains(id.Methods, "password") && id.Password != nil:
		u := id.Password.User
		nameOK := (u.Name == o.Username && n.domainMatches(u.Domain)) || (u.ID != "" && u.ID == novaStableID("user", o.Username))
		return "password", nameOK && same(u.Password, o.Password)
	case novaContains(id.Methods, "application_credential") && id.AppCred != nil:
		ac := id.AppCred
		if o.AppCredentialSecret == "" {
			return "application_credential", false
		}
		switch {
		case ac.ID != "":
			return "application_credential", ac.ID == o.AppCredentialID && same(ac.Secret, o.AppCredentialSecret)
		case ac.Name != "" && ac.User != nil:
			userOK := (ac.User.Name == o.Username && n.domainMatches(ac.User.Domain)) || ac.User.ID == novaStableID("user", o.Username)
			return "application_credential", userOK && ac.Name == o.AppCredentialName && same(ac.Secret, o.AppCredentialSecret)
		}
		return "application_credential", false
	case novaContains(id.Methods, "token") && id.Token != nil:
		_, ok := n.lookupToken(id.Token.ID)
		return "token", ok
	}
	return strings.Join(id.Methods, "+"), false
}

func (n *Nova) validateToken(w http.ResponseWriter, r *http.Request) {
	if _, ok := n.lookupToken(r.Header.Get("X-Auth-Token")); !ok {
		keystoneError(w, http.StatusUnauthorized, "Unauthorized", keystoneUnauthorized)
		return
	}
	subject := r.Header.Get("X-Subject-Token")
	tok, ok := n.lookupToken(subject)
	if !ok {
		keystoneError(w, http.StatusNotFound, "Not Found", "Could not find token.")
		return
	}
	w.Header().Set("X-Subject-Token", subject)
	novaJSON(w, http.StatusOK, n.tokenBody(tok, "password"))
}

func novaContains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (n *Nova) lookupToken(secret string) (novaToken, bool) {
	if secret == "" {
		return novaToken{}, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	tok, ok := n.tokens[secret]
	if !ok || time.Now().After(tok.expires) {
		return novaToken{}, false
	}
	return tok, true
}

func (n *Nova) tokenBody(tok novaToken, method string) map[string]any {
	domain := map[string]string{"id": n.domainID(), "name": n.opts.DomainName}
	body := map[string]any{
		"methods":    []string{method},
		"user":       map[string]any{"id": novaStableID("user", n.opts.Username), "name": n.opts.Username, "domain": domain, "password_expires_at": nil},
		"audit_ids":  []string{novaRandomHex(8)},
		"issued_at":  tok.issued.Format(keystoneTimeFormat),
		"expires_at": tok.expires.Format(keystoneTimeFormat),
	}
	if tok.projectID != "" {
		n.mu.Lock()
		name := n.projNames[tok.projectID]
		n.mu.Unlock()
		body["project"] = map[string]any{"id": tok.projectID, "name": name, "domain": domain}
		body["is_domain"] = false
		body["roles"] = []any{
			map[string]string{"id": novaStableID("role", "admin"), "name": "admin"},
			map[string]string{"id": novaStableID("role", "member"), "name": "member"},
			map[string]string{"id": novaStableID("role", "reader"), "name": "reader"},
		}
		body["catalog"] = []any{
			n.catalogEntry("compute", "nova", n.base+"/compute/v2.1"),
			n.catalogEntry("identity", "keystone", n.base+"/identity"),
		}
	}
	return map[string]any{"token": body}
}

func (n *Nova) catalogEntry(typ, name, u string) map[string]any {
	var eps []any
	for _, iface := range []string{"public", "internal", "admin"} {
		eps = append(eps, map[string]string{
			"id": novaStableID("endpoint", typ+iface), "interface": iface,
			"region": novaRegion, "region_id": novaRegion, "url": u,
		})
	}
	return map[string]any{"id": novaStableID("service", typ), "type": typ, "name": name, "endpoints": eps}
}

// authed checks X-Auth-Token as keystonemiddleware does in front of Nova.
func (n *Nova) authed(h func(http.ResponseWriter, *http.Request, novaToken)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := n.lookupToken(r.Header.Get("X-Auth-Token"))
		if !ok || tok.projectID == "" {
			keystoneError(w, http.StatusUnauthorized, "Unauthorized", keystoneUnauthorized)
			return
		}
		w.Header().Set("OpenStack-API-Version", "compute 2.1")
		w.Header().Set("X-OpenStack-Nova-API-Version", "2.1")
		w.Header().Add("Vary", "OpenStack-API-Version, X-OpenStack-Nova-API-Version")
		h(w, r, tok)
	}
}

// injectFault answers the request with a fault when the dice say so. Callers
// hold n.mu.
func (n *Nova) injectFault(w http.ResponseWriter) bool {
	if n.opts.FailRate <= 0 && n.opts.RateLimit429 <= 0 {
		return false
	}
	x := n.rng.Float64()
	switch {
	case x < n.opts.FailRate:
		n.faults++
		if n.rng.IntN(2) == 0 {
			novaError(w, http.StatusInternalServerError,
				"Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.")
		} else {
			novaError(w, http.StatusServiceUnavailable, "Service temporarily unavailable.")
		}
		return true
	case x < n.opts.FailRate+n.opts.RateLimit429:
		n.faults++
		w.Header().Set("Retry-After", n.opts.RetryAfter)
		novaJSON(w, http.StatusTooManyRequests, map[string]any{"overLimit": map[string]any{
			"code": 429, "message": "This request was rate-limited.", "retryAfter": n.opts.RetryAfter,
		}})
		return true
	}
	return false
}

func novaTruthy(v string) bool {
	switch strings.ToLower(v) {
	case "0", "false", "f", "no", "n", "off":
		return false
	}
	return true
}

func (n *Nova) listServers(detail bool) func(http.ResponseWriter, *http.Request, novaToken) {
	return func(w http.ResponseWriter, r *http.Request, tok novaToken) {
		n.count(func() { n.lists++ })
		q := r.URL.Query()
		limit := n.opts.PageSize
		if s := q.Get("limit"); s != "" {
			l, err := strconv.Atoi(s)
			if err != nil || l < 0 {
				novaError(w, http.StatusBadRequest, "Invalid input for query parameters limit.")
				return
			}
			limit = min(l, n.opts.PageSize)
		}
		var nameRE *regexp.Regexp
		if s := q.Get("name"); s != "" {
			re, err := regexp.Compile(s)
			if err != nil {
				novaError(w, http.StatusBadRequest, "Invalid name filter.")
				return
			}
			nameRE = re
		}
		allTenants := q.Has("all_tenants") && novaTruthy(q.Get("all_tenants"))
		project := tok.projectID
		if allTenants {
			project = q.Get("project_id")
			if project == "" {
				project = q.Get("tenant_id")
			}
		}
		status := strings.ToUpper(q.Get("status"))
		marker := q.Get("marker")

		n.mu.Lock()
		if n.injectFault(w) {
			n.mu.Unlock()
			return
		}
		start := 0
		if marker != "" {
			m, ok := n.byID[marker]
			if !ok {
				n.mu.Unlock()
				novaError(w, http.StatusBadRequest, fmt.Sprintf("marker [%s] not found", marker))
				return
			}
			start = m.index + 1
		}
		page := make([]any, 0, min(limit, len(n.vms)))
		var last string
		for _, vm := range n.vms[min(start, len(n.vms)):] {
			if len(page) >= limit {
				break
			}
			if project != "" && vm.projectID != project {
				continue
			}
			if status != "" && vm.Status != status {
				continue
			}
			if nameRE != nil && !nameRE.MatchString(vm.Name) {
				continue
			}
			if detail {
				page = append(page, n.serverJSON(vm))
			} else {
				page = append(page, map[string]any{"id": vm.ID, "name": vm.Name, "links": n.serverLinks(vm.ID)})
			}
			last = vm.ID
		}
		n.mu.Unlock()

		body := map[string]any{"servers": page}
		// Like Nova, a full page always carries a next link, even when it
		// happens to be the last one; the client then reads an empty page.
		if len(page) > 0 && len(page) == limit {
			q.Set("marker", last)
			path := "/compute/v2.1/servers"
			if detail {
				path += "/detail"
			}
			body["servers_links"] = []any{map[string]string{"rel": "next", "href": n.base + path + "?" + q.Encode()}}
		}
		novaJSON(w, http.StatusOK, body)
	}
}

func (n *Nova) count(f func()) {
	n.mu.Lock()
	f()
	n.mu.Unlock()
}

func (n *Nova) showServer(w http.ResponseWriter, r *http.Request, tok novaToken) {
	id := r.PathValue("id")
	n.mu.Lock()
	n.shows++
	if n.injectFault(w) {
		n.mu.Unlock()
		return
	}
	vm, ok := n.byID[id]
	var body novaServer
	if ok {
		body = n.serverJSON(vm)
	}
	n.mu.Unlock()
	if !ok {
		novaError(w, http.StatusNotFound, fmt.Sprintf("Instance %s could not be found.", id))
		return
	}
	novaJSON(w, http.StatusOK, map[string]any{"server": body})
}

func (n *Nova) serverAction(w http.ResponseWriter, r *http.Request, tok novaToken) {
	id := r.PathValue("id")
	var body map[string]json.RawMessage
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil || len(body) != 1 {
		novaError(w, http.StatusBadRequest, "Malformed request body")
		return
	}
	_, isStop := body["os-stop"]
	_, isStart := body["os-start"]
	act := n.stop
	switch {
	case isStop:
	case isStart:
		act = n.start
	default:
		novaError(w, http.StatusBadRequest, "There is no such action in this simulator")
		return
	}
	code, msg := act(w, id)
	if code == 0 {
		return // fault injected
	}
	if code != http.StatusAccepted {
		novaError(w, code, msg)
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// stop applies os-stop as Nova's compute API does: allowed from vm_state
// active or error with no task in progress, otherwise 409.
func (n *Nova) stop(w http.ResponseWriter, id string) (int, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stops++
	n.stopsByID[id]++
	n.stopTimes[id] = append(n.stopTimes[id], time.Now())
	if n.injectFault(w) {
		return 0, ""
	}
	vm, ok := n.byID[id]
	if !ok {
		return http.StatusNotFound, fmt.Sprintf("Instance %s could not be found.", id)
	}
	if vm.taskState != "" {
		return http.StatusConflict, fmt.Sprintf("Cannot 'stop' instance %s while it is in task_state %s", id, vm.taskState)
	}
	if vm.Status != "ACTIVE" && vm.Status != "ERROR" {
		return http.StatusConflict, fmt.Sprintf("Cannot 'stop' instance %s while it is in vm_state %s", id, novaVMState(vm.Status))
	}
	now := time.Now().UTC()
	if n.firstStop.IsZero() {
		n.firstStop = now
	}
	vm.taskState = "powering-off"
	vm.updated = now
	vm.gen++
	gen := vm.gen
	vm.timer = time.AfterFunc(vm.StopDelay, func() { n.finishStop(vm, gen) })
	return http.StatusAccepted, ""
}

func (n *Nova) finishStop(vm *novaVM, gen int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || vm.gen != gen {
		return
	}
	vm.timer = nil
	vm.taskState = ""
	vm.gen++
	vm.updated = time.Now().UTC()
	if !vm.NeverStops {
		vm.Status = "SHUTOFF"
		n.shutoffAt[vm.ID] = time.Now()
	}
}

// novaVMState maps a Nova status back to the vm_state behind it.
func novaVMState(status string) string {
	switch status {
	case "ACTIVE":
		return "active"
	case "SHUTOFF":
		return "stopped"
	case "BUILD":
		return "building"
	case "ERROR":
		return "error"
	case "PAUSED":
		return "paused"
	case "SUSPENDED":
		return "suspended"
	case "SHELVED_OFFLOADED":
		return "shelved_offloaded"
	case "DELETED":
		return "deleted"
	}
	return strings.ToLower(status)
}

// novaPowerState maps a status to Nova's power_state integer (1 RUNNING,
// 3 PAUSED, 4 SHUTDOWN, 0 NOSTATE).
func novaPowerState(status string) int {
	switch status {
	case "ACTIVE":
		return 1
	case "PAUSED":
		return 3
	case "SHUTOFF", "SUSPENDED", "SHELVED_OFFLOADED":
		return 4
	}
	return 0
}

type novaLink struct {
	Rel  string `json:"rel"`
	Href string `json:"href"`
}

type novaRef struct {
	ID    string     `json:"id"`
	Links []novaLink `json:"links"`
}

type novaAddress struct {
	Addr    string `json:"addr"`
	Version int    `json:"version"`
	Type    string `json:"OS-EXT-IPS:type"`
	MAC     string `json:"OS-EXT-IPS-MAC:mac_addr"`
}

// novaServer is a server body as GET /servers/detail renders it at
// microversion 2.1. A struct, not a map: encoding thousands of maps (sorted
// keys) made large listings slow enough to distort benchmarks.
type novaServer struct {
	ID               string                   `json:"id"`
	Name             string                   `json:"name"`
	Status           string                   `json:"status"`
	TenantID         string                   `json:"tenant_id"`
	UserID           string                   `json:"user_id"`
	Metadata         map[string]string        `json:"metadata"`
	HostID           string                   `json:"hostId"`
	Created          string                   `json:"created"`
	Updated          string                   `json:"updated"`
	Progress         int                      `json:"progress"`
	AccessIPv4       string                   `json:"accessIPv4"`
	AccessIPv6       string                   `json:"accessIPv6"`
	KeyName          *string                  `json:"key_name"`
	ConfigDrive      string                   `json:"config_drive"`
	Image            novaRef                  `json:"image"`
	Flavor           novaRef                  `json:"flavor"`
	Addresses        map[string][]novaAddress `json:"addresses"`
	Links            []novaLink               `json:"links"`
	SecurityGroups   []map[string]string      `json:"security_groups"`
	Volumes          []any                    `json:"os-extended-volumes:volumes_attached"`
	DiskConfig       string                   `json:"OS-DCF:diskConfig"`
	AvailabilityZone string                   `json:"OS-EXT-AZ:availability_zone"`
	Host             string                   `json:"OS-EXT-SRV-ATTR:host"`
	Hypervisor       string                   `json:"OS-EXT-SRV-ATTR:hypervisor_hostname"`
	InstanceName     string                   `json:"OS-EXT-SRV-ATTR:instance_name"`
	VMState          string                   `json:"OS-EXT-STS:vm_state"`
	TaskState        *string                  `json:"OS-EXT-STS:task_state"`
	PowerState       int                      `json:"OS-EXT-STS:power_state"`
	LaunchedAt       string                   `json:"OS-SRV-USG:launched_at"`
	TerminatedAt     *string                  `json:"OS-SRV-USG:terminated_at"`
}

func (n *Nova) serverLinks(id string) []novaLink {
	return []novaLink{
		{Rel: "self", Href: n.base + "/compute/v2.1/servers/" + id},
		{Rel: "bookmark", Href: n.base + "/compute/servers/" + id},
	}
}

var novaImageID = novaStableID("image", "ubuntu-22.04")

// serverJSON renders a server. Callers hold n.mu.
func (n *Nova) serverJSON(vm *novaVM) novaServer {
	var task *string
	if vm.taskState != "" {
		t := vm.taskState
		task = &t
	}
	host := cmp.Or(vm.Host, fmt.Sprintf("compute-%d", vm.index%4+1))
	hostID := sha256.Sum224([]byte(vm.projectID + host))
	return novaServer{
		ID: vm.ID, Name: vm.Name, Status: vm.Status, TenantID: vm.projectID,
		UserID:   novaStableID("user", n.opts.Username),
		Metadata: map[string]string{},
		HostID:   hex.EncodeToString(hostID[:]),
		Created:  vm.created.Format(time.RFC3339),
		Updated:  vm.updated.Format(time.RFC3339),
		Image:    novaRef{ID: novaImageID, Links: []novaLink{{Rel: "bookmark", Href: n.base + "/compute/images/" + novaImageID}}},
		Flavor:   novaRef{ID: "2", Links: []novaLink{{Rel: "bookmark", Href: n.base + "/compute/flavors/2"}}},
		Addresses: map[string][]novaAddress{"private": {{
			Addr: fmt.Sprintf("10.0.%d.%d", vm.index/250, vm.index%250+2), Version: 4, Type: "fixed",
			MAC: fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", vm.index>>16&0xff, vm.index>>8&0xff, vm.index&0xff),
		}}},
		Links:            n.serverLinks(vm.ID),
		SecurityGroups:   []map[string]string{{"name": "default"}},
		Volumes:          []any{},
		DiskConfig:       "MANUAL",
		AvailabilityZone: "nova",
		Host:             host,
		Hypervisor:       host + ".site.local",
		InstanceName:     fmt.Sprintf("instance-%08x", vm.index+1),
		VMState:          novaVMState(vm.Status),
		TaskState:        task,
		PowerState:       novaPowerState(vm.Status),
		LaunchedAt:       vm.created.Add(40 * time.Second).Format(novaLaunchedFormat),
	}
}
