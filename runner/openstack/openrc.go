package openstack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// openrcCloudName names the clouds.yaml entry built from the openrc
// variables. It appears in no file.
const openrcCloudName = "openrc"

// openrcParse returns the clouds.Parse options that read the credentials
// from the openrc variables (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, ...)
// instead of a clouds.yaml file.
//
// gophercloud's openstack.AuthOptionsFromEnv reads only OS_DOMAIN_NAME, not
// the OS_USER_DOMAIN_NAME and OS_PROJECT_DOMAIN_NAME that every openrc file
// Horizon writes sets, nor OS_REGION_NAME or OS_INTERFACE. So the variables
// are turned into the clouds.yaml entry python-openstackclient would build
// from them, and that entry goes through the same clouds.Parse as a file:
// one path for scoping, region, interface and TLS (OS_CACERT, OS_CERT,
// OS_KEY, which clouds.Parse reads itself). The entry lives in memory only.
func openrcParse() ([]clouds.ParseOption, error) {
	c, err := openrcCloud(os.Getenv)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(clouds.Clouds{Clouds: map[string]clouds.Cloud{openrcCloudName: c}})
	if err != nil {
		return nil, fmt.Errorf("encode openrc cloud: %w", err)
	}
	// JSON is YAML: clouds.Parse reads it as a clouds.yaml.
	return []clouds.ParseOption{clouds.WithCloudsYAML(bytes.NewReader(b)), clouds.WithCloudName(openrcCloudName)}, nil
}

// openrcCloud maps the openrc variables to a clouds.yaml entry, or says which
// variable is missing. An application credential carries its own project,
// so the project and domain variables are left out with one (Keystone
// refuses a token request that names a scope with an application
// credential).
func openrcCloud(getenv func(string) string) (clouds.Cloud, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := strings.TrimSpace(getenv(n)); v != "" {
				return v
			}
		}
		return ""
	}
	a := &clouds.AuthInfo{
		AuthURL:                     env("OS_AUTH_URL"),
		Username:                    env("OS_USERNAME"),
		UserID:                      env("OS_USER_ID", "OS_USERID"),
		Password:                    getenv("OS_PASSWORD"), // a password may start or end with a space
		ApplicationCredentialID:     env("OS_APPLICATION_CREDENTIAL_ID"),
		ApplicationCredentialName:   env("OS_APPLICATION_CREDENTIAL_NAME"),
		ApplicationCredentialSecret: getenv("OS_APPLICATION_CREDENTIAL_SECRET"),
	}
	if a.AuthURL == "" {
		return clouds.Cloud{}, errors.New("OS_AUTH_URL is not set")
	}
	appCred := a.ApplicationCredentialID != "" || a.ApplicationCredentialName != ""
	switch {
	case appCred && a.ApplicationCredentialSecret == "":
		return clouds.Cloud{}, errors.New("OS_APPLICATION_CREDENTIAL_SECRET is not set")
	case appCred:
		a.Password = ""
		if a.ApplicationCredentialID != "" {
			a.Username, a.UserID = "", ""
		} else {
			a.UserDomainName, a.UserDomainID = env("OS_USER_DOMAIN_NAME", "OS_DOMAIN_NAME"), env("OS_USER_DOMAIN_ID", "OS_DOMAIN_ID")
		}
	case a.Username == "" && a.UserID == "":
		return clouds.Cloud{}, errors.New("neither OS_USERNAME nor OS_USER_ID nor OS_APPLICATION_CREDENTIAL_ID is set")
	case a.Password == "":
		return clouds.Cloud{}, errors.New("OS_PASSWORD is not set")
	default:
		a.UserDomainName, a.UserDomainID = env("OS_USER_DOMAIN_NAME"), env("OS_USER_DOMAIN_ID")
		a.ProjectName, a.ProjectID = env("OS_PROJECT_NAME", "OS_TENANT_NAME"), env("OS_PROJECT_ID", "OS_TENANT_ID")
		a.ProjectDomainName, a.ProjectDomainID = env("OS_PROJECT_DOMAIN_NAME"), env("OS_PROJECT_DOMAIN_ID")
		a.DomainName, a.DomainID = env("OS_DOMAIN_NAME"), env("OS_DOMAIN_ID")
		a.SystemScope = env("OS_SYSTEM_SCOPE")
	}
	return clouds.Cloud{
		AuthInfo:   a,
		RegionName: env("OS_REGION_NAME"),
		Interface:  env("OS_INTERFACE", "OS_ENDPOINT_TYPE"),
	}, nil
}
