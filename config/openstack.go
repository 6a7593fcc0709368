package config

import (
	"errors"
	"net/url"
	"os"
	"strings"
)

// openstackSource decides where the credentials come from, as the OpenStack
// CLI does: the configured cloud, else OS_CLOUD, else the openrc variables.
// An empty section is not "no OpenStack": with none of the three it is an
// error. Silently skipping the VM step would power hosts off under running
// VMs.
func (d *decoder) openstackSource(e entry, m map[string]entry, o *OpenStack) {
	if ce, ok := m["cloud"]; ok {
		if s, ok := d.nonEmpty(ce.val, "openstack.cloud"); ok {
			o.Cloud, o.Source = s, SourceConfig
		}
		return
	}
	if env := os.Getenv("OS_CLOUD"); env != "" {
		o.Cloud, o.Source = env, SourceOSCloud
		return
	}
	if os.Getenv("OS_AUTH_URL") == "" {
		d.fail(e.key, "openstack.cloud", "required when the openstack section is present, or set OS_CLOUD or the openrc variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, ...); leave the section out on a site without OpenStack")
		return
	}
	rc, err := readOpenrc(os.Getenv)
	if err != nil {
		d.fail(e.key, "openstack", "no cloud configured and no OS_CLOUD, so the openrc variables are used: %v", err)
		return
	}
	o.Source, o.Openrc = SourceOpenrc, rc
}

// readOpenrc reads the openrc variables the login needs, refusing a set
// that cannot log in (the login itself, in runner/openstack, reads them
// again with the secret). It never keeps the password or secret.
func readOpenrc(getenv func(string) string) (*Openrc, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := strings.TrimSpace(getenv(n)); v != "" {
				return v
			}
		}
		return ""
	}
	rc := &Openrc{
		AuthURL: redactURL(env("OS_AUTH_URL")), User: env("OS_USERNAME", "OS_USER_ID", "OS_USERID"),
		Region: env("OS_REGION_NAME"), AppCredential: env("OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_NAME"),
	}
	if rc.AppCredential != "" {
		if getenv("OS_APPLICATION_CREDENTIAL_SECRET") == "" {
			return nil, errors.New("OS_APPLICATION_CREDENTIAL_SECRET is not set")
		}
		if env("OS_APPLICATION_CREDENTIAL_ID") != "" {
			rc.User = "" // the credential names its user
		}
		return rc, nil
	}
	switch {
	case rc.User == "":
		return nil, errors.New("neither OS_USERNAME nor OS_APPLICATION_CREDENTIAL_ID is set")
	case getenv("OS_PASSWORD") == "":
		return nil, errors.New("OS_PASSWORD is not set")
	}
	rc.UserDomain = env("OS_USER_DOMAIN_NAME", "OS_USER_DOMAIN_ID", "OS_DOMAIN_NAME", "OS_DOMAIN_ID")
	rc.Project = env("OS_PROJECT_NAME", "OS_PROJECT_ID", "OS_TENANT_NAME", "OS_TENANT_ID")
	rc.ProjectDomain = env("OS_PROJECT_DOMAIN_NAME", "OS_PROJECT_DOMAIN_ID", "OS_DOMAIN_NAME", "OS_DOMAIN_ID")
	if rc.UserDomain == "" && env("OS_USERNAME") != "" {
		return nil, errors.New("OS_USER_DOMAIN_NAME (or OS_USER_DOMAIN_ID) is not set: Keystone needs the domain of OS_USERNAME")
	}
	return rc, nil
}

// redactURL hides a password written into a URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
