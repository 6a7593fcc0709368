package openstack_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgeops/shutdownd/runner/openstack"
	"github.com/edgeops/shutdownd/sitesim"
)

// openrcVars are every variable the openrc reader looks at, cleared before
// each case so that the machine's own environment cannot leak in.
var openrcVars = []string{
	"OS_CLOUD", "OS_CLIENT_CONFIG_FILE", "OS_AUTH_URL", "OS_USERNAME", "OS_USER_ID", "OS_USERID", "OS_PASSWORD",
	"OS_PROJECT_NAME", "OS_PROJECT_ID", "OS_TENANT_NAME", "OS_TENANT_ID", "OS_USER_DOMAIN_NAME", "OS_USER_DOMAIN_ID",
	"OS_PROJECT_DOMAIN_NAME", "OS_PROJECT_DOMAIN_ID", "OS_DOMAIN_NAME", "OS_DOMAIN_ID", "OS_REGION_NAME",
	"OS_INTERFACE", "OS_ENDPOINT_TYPE", "OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_NAME",
	"OS_APPLICATION_CREDENTIAL_SECRET", "OS_SYSTEM_SCOPE", "OS_CACERT", "OS_CERT", "OS_KEY", "OS_AUTH_TYPE",
	"OS_IDENTITY_API_VERSION",
}

func setOpenrc(t *testing.T, env map[string]string) {
	t.Helper()
	for _, k := range openrcVars {
		t.Setenv(k, "")
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// The openrc variables of a password or an application credential
// authenticate against the simulated Keystone through gophercloud, scoped
// to the project with the user and project domains of the openrc (which
// gophercloud's own AuthOptionsFromEnv does not read); a missing variable
// is named, and the password appears in no error. Not parallel: it sets
// the environment.
func TestNewFromOpenrcVariables(t *testing.T) {
	const password, secret = "openrc-Pass-99", "app-Cred-Secret-7"
	n, _ := startCloud(t, sitesim.NovaOptions{
		Password: password, DomainName: "edge-domain",
		AppCredentialID: "ac-42", AppCredentialSecret: secret,
		VMs: []sitesim.VM{{ID: "a", Name: "a"}},
	})
	without := func(env map[string]string, key string) map[string]string {
		out := map[string]string{}
		for k, v := range env {
			if k != key {
				out[k] = v
			}
		}
		return out
	}
	with := func(env map[string]string, key, val string) map[string]string {
		out := without(env, key)
		out[key] = val
		return out
	}
	pw, ac := n.OpenrcEnv(false), n.OpenrcEnv(true)
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // "" means it lists the server
	}{
		{"password", pw, ""},
		{"application credential", ac, ""},
		{"application credential and a stray project", with(ac, "OS_PROJECT_NAME", "admin"), ""},
		{"no auth url", without(pw, "OS_AUTH_URL"), "OS_AUTH_URL is not set"},
		{"no password", without(pw, "OS_PASSWORD"), "OS_PASSWORD is not set"},
		{"no user", without(pw, "OS_USERNAME"), "OS_USERNAME"},
		{"no secret", without(ac, "OS_APPLICATION_CREDENTIAL_SECRET"), "OS_APPLICATION_CREDENTIAL_SECRET is not set"},
		{"wrong password", with(pw, "OS_PASSWORD", "not-"+password), "the openrc variables"},
		{"wrong project domain", with(pw, "OS_PROJECT_DOMAIN_NAME", "Default"), "HTTP 401"},
		{"unknown region", with(pw, "OS_REGION_NAME", "Mars"), `region "Mars"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setOpenrc(t, tc.env)
			// A clouds.yaml entry named by OS_CLOUD would win in
			// clouds.Parse; Openrc must not look at it.
			t.Setenv("OS_CLOUD", "elsewhere")
			c, err := openstack.New(context.Background(), openstack.Options{Openrc: true, MaxRetries: -1})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: %v, want an error with %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), password) || strings.Contains(err.Error(), secret) {
					t.Fatalf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			got, err := c.ListServers(context.Background())
			if err != nil || len(got) != 1 {
				t.Fatalf("list: %v %v", got, err)
			}
		})
	}
	methods := map[string]int{}
	for _, l := range n.Logins() {
		if l.OK {
			methods[l.Method]++
		}
	}
	// The password was right for "password", "wrong project domain" (the
	// scope is refused, not the password) and "unknown region".
	if methods["password"] != 3 || methods["application_credential"] != 2 {
		t.Errorf("successful logins by method %v, want 3 password, 2 application_credential", methods)
	}
}

// TokenExpiresAt is Keystone's expires_at on this machine's clock.
func TestTokenExpiresAt(t *testing.T) {
	t.Parallel()
	_, path := startCloud(t, sitesim.NovaOptions{TokenTTL: 90 * time.Second})
	before := time.Now()
	c := newClient(t, fastOptions(path))
	after := time.Now()
	exp := c.TokenExpiresAt()
	// The simulator writes microseconds: allow for the truncation.
	if exp.Before(before.Add(90*time.Second-time.Millisecond)) || exp.After(after.Add(90*time.Second+time.Millisecond)) {
		t.Fatalf("token expires at %s, want 90s after the login (between %s and %s)", exp, before, after)
	}
}
