package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// clearOpenStackEnv empties every variable the openstack section looks at,
// so the machine's own environment cannot decide a test.
func clearOpenStackEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"OS_CLOUD", "OS_AUTH_URL", "OS_USERNAME", "OS_USER_ID", "OS_USERID", "OS_PASSWORD",
		"OS_PROJECT_NAME", "OS_PROJECT_ID", "OS_TENANT_NAME", "OS_TENANT_ID", "OS_USER_DOMAIN_NAME", "OS_USER_DOMAIN_ID",
		"OS_PROJECT_DOMAIN_NAME", "OS_PROJECT_DOMAIN_ID", "OS_DOMAIN_NAME", "OS_DOMAIN_ID", "OS_REGION_NAME",
		"OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_NAME", "OS_APPLICATION_CREDENTIAL_SECRET"} {
		t.Setenv(k, "")
	}
}

// With no cloud configured and no OS_CLOUD, the openrc variables are the
// credentials; check-config says so and shows none of the secrets. A
// configured cloud or OS_CLOUD wins over them, as in the OpenStack CLI.
func TestOpenStackSourceOpenrc(t *testing.T) {
	const pw, secret = "Openrc-Pw-314", "App-Secret-271"
	dir := site(t)
	openrc := map[string]string{
		"OS_AUTH_URL": "https://keystone.example:5000/v3", "OS_USERNAME": "shutdownd", "OS_PASSWORD": pw,
		"OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Users", "OS_PROJECT_DOMAIN_NAME": "Default",
		"OS_REGION_NAME": "RegionOne",
	}
	tests := []struct {
		name      string
		env       map[string]string
		section   string
		wantSrc   string
		wantOut   []string // in check-config's output
		wantError string
	}{
		{"password", openrc, "openstack: {}\n", SourceOpenrc, []string{
			"credentials: openrc variables (no cloud configured and no OS_CLOUD), Keystone https://keystone.example:5000/v3",
			"user shutdownd (domain Users), project admin (domain Default), password from OS_PASSWORD", "region RegionOne"}, ""},
		{"application credential", map[string]string{"OS_AUTH_URL": "https://k.example/v3",
			"OS_APPLICATION_CREDENTIAL_ID": "ac-9", "OS_APPLICATION_CREDENTIAL_SECRET": secret}, "openstack:\n  concurrency: 4\n", SourceOpenrc,
			[]string{"application credential ac-9, secret from OS_APPLICATION_CREDENTIAL_SECRET"}, ""},
		{"configured cloud wins", with(openrc, "OS_CLOUD", "other"), "openstack: {cloud: edge}\n", SourceConfig,
			[]string{`credentials: clouds.yaml, cloud "edge" (named by openstack.cloud) from the standard clouds.yaml search`}, ""},
		{"OS_CLOUD wins", with(openrc, "OS_CLOUD", "other"), "openstack: {}\n", SourceOSCloud,
			[]string{`cloud "other" (named by OS_CLOUD)`}, ""},
		{"no password", with(openrc, "OS_PASSWORD", ""), "openstack: {}\n", "", nil, "OS_PASSWORD is not set"},
		{"no user domain", with(openrc, "OS_USER_DOMAIN_NAME", ""), "openstack: {}\n", "", nil, "OS_USER_DOMAIN_NAME"},
		{"no secret", map[string]string{"OS_AUTH_URL": "https://k.example/v3", "OS_APPLICATION_CREDENTIAL_ID": "ac-9"},
			"openstack: {}\n", "", nil, "OS_APPLICATION_CREDENTIAL_SECRET is not set"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearOpenStackEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := parseIn(t, dir, base+tc.section)
			if tc.wantError != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Line != 4 || !strings.Contains(fe.Reason, tc.wantError) {
					t.Fatalf("err %v, want line 4 saying %q", err, tc.wantError)
				}
				if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), secret) {
					t.Fatalf("error leaks a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.OpenStack.Source != tc.wantSrc || !c.OpenStack.Enabled() {
				t.Fatalf("source %q, want %q", c.OpenStack.Source, tc.wantSrc)
			}
			var buf bytes.Buffer
			c.Describe(&buf)
			out := buf.String()
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("check-config output lacks %q:\n%s", w, out)
				}
			}
			if strings.Contains(out, pw) || strings.Contains(out, secret) || strings.Contains(out, NoOpenStackWarning) {
				t.Errorf("check-config output leaks a secret or warns of no OpenStack:\n%s", out)
			}
		})
	}
}

func with(env map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for key, val := range env {
		if key != k {
			out[key] = val
		}
	}
	return out
}

// Leaving the openstack section out is allowed (a site without OpenStack)
// but listed under Warnings, naming the OpenStack variables that are set
// and not used.
func TestNoOpenStackSectionIsAWarning(t *testing.T) {
	dir := site(t)
	for _, tc := range []struct{ authURL, want string }{
		{"", NoOpenStackWarning + "\n"},
		{"https://k.example/v3", NoOpenStackWarning + " (OS_AUTH_URL set in the environment, but not used without the section)"},
	} {
		clearOpenStackEnv(t)
		t.Setenv("OS_AUTH_URL", tc.authURL)
		c, err := parseIn(t, dir, base)
		if err != nil || c.OpenStack.Enabled() {
			t.Fatalf("no section: %v, enabled %v", err, c.OpenStack.Enabled())
		}
		var buf bytes.Buffer
		c.Describe(&buf)
		out := buf.String()
		warn := out[strings.Index(out, "\nWarnings\n"):]
		if !strings.Contains(warn, "  - "+tc.want) || !strings.Contains(NoOpenStackWarning, "hosts will be powered off under running VMs") {
			t.Errorf("Warnings lack %q:\n%s", tc.want, out)
		}
	}
}
