// Package integration holds the integration tests of shutdownd against the
// software it meets on a real site: OpenSSH sshd processes, OpenIPMI's
// ipmi_sim driven through ipmitool, an HTTPS Redfish BMC and a Keystone+Nova
// API configured through clouds.yaml, with faults injected into each.
//
// Every test is named TestIntegration..., so
//
//	go test -race -run Integration ./...
//
// runs only these. They need root (sshd logs users in) and the Debian
// packages openssh-server, openipmi and ipmitool; without them they skip,
// and under CI=true they fail.
package integration
