package config

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Describe writes the shutdown plan in plain words: what shutdownd
// check-config prints, so an operator can read what a shutdown would do,
// in order, before it ever has to. The storage commands come from
// Storage.Plan, the same list the runner executes. Secrets are never
// printed, and webhook URLs are shown by scheme and host only because
// their paths often carry tokens.
func (c *Config) Describe(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	c.describeService(p)
	p("")
	warnings := c.describeOpenStack(p)
	p("")
	c.describeStorage(p)
	p("")
	warnings = append(warnings, c.describeHosts(w, p)...)
	p("")
	c.PowerSource.DescribePower(p)
	c.describeStartup(p)
	c.describeNotify(p)
	if len(warnings) > 0 {
		p("")
		p("Warnings")
		for _, m := range warnings {
			p("  - %s", m)
		}
	}
}

// describeService prints where the service listens and keeps its records,
// and the rules that hold for every job (resume, simulation age).
func (c *Config) describeService(p func(string, ...any)) {
	p("shutdownd plan from %s", c.Path)
	p("")
	mode := "plain HTTP"
	if c.TLS.CertFile != "" {
		mode = "HTTPS"
	}
	p("Service: listen %s (%s), database %s, metrics %s", c.Listen, mode, c.Database, metricsText(c.Metrics.Access))
	p("Resume: a shutdown interrupted by a restart of the service resumes only on the same boot of this machine and within %s of its last record; otherwise it fails and nothing is powered off", dur(c.ResumeWindow))
	p("Overview: warns when the last successful simulation is older than %s", dur(c.Web.SimulationMaxAge))
}

// describeStorage prints step 2 from Storage.Plan, the list the runner
// executes.
func (c *Config) describeStorage(p func(string, ...any)) {
	s := c.Storage
	plan := s.Plan()
	if len(plan) == 0 {
		p("Step 2: Storage: skipped (type %s)", s.Type)
		return
	}
	p("Step 2: Storage (%s), in this order", s.Type)
	for i, cmd := range plan {
		if s.Type == StorageCeph && i == len(CephFlags) {
			p("  then, on all storage hosts at once:")
		}
		p("  on %s as %s: %s", cmd.Host, c.sshUser(cmd.Host), cmd.Command)
	}
	if s.HealthCommand != "" {
		p("  simulation health check on %s: %s", s.AdminHost, s.HealthCommand)
	}
}

// describeHosts prints step 3, group by group with the self host last, and
// returns the warnings about hosts whose power-off cannot be confirmed.
func (c *Config) describeHosts(w io.Writer, p func(string, ...any)) (warnings []string) {
	p("Step 3: Hosts, group by group (hosts of one group in parallel)")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, g := range c.HostGroups() {
		label := g[0].Role
		if len(c.HostOrder) > 0 {
			label = "host_order"
		}
		fmt.Fprintf(tw, "  group %d (%s)\n", i+1, label)
		for _, h := range g {
			c.hostLine(tw, h)
		}
	}
	self, hasSelf := c.Self()
	if hasSelf {
		fmt.Fprintf(tw, "  last: the machine running shutdownd, after the job's final state is saved\n")
		c.hostLine(tw, self)
	}
	_ = tw.Flush()
	t := c.Timeouts
	p("  per host: SSH power-off command, then wait up to %s for the BMC to report Off,", dur(t.HostOff))
	p("  then BMC soft off (up to %s), then BMC hard off (up to %s); power read every %s", dur(t.BMCSoftOff), dur(t.BMCHardOff), dur(t.BMCPollInterval))

	for _, h := range c.Hosts {
		switch {
		case h.BMC == nil:
			warnings = append(warnings, fmt.Sprintf("%s has no BMC: its power-off cannot be confirmed or forced", h.Name))
		case h.BMC.InsecureTLS && h.BMC.Protocol == ProtocolRedfish:
			warnings = append(warnings, fmt.Sprintf("%s: BMC certificate is not verified (insecure_tls)", h.Name))
		}
	}
	if !hasSelf {
		warnings = append(warnings, "no host is marked self: the machine running shutdownd is not powered off by it")
	}
	return warnings
}

// describeNotify prints the webhooks by origin only: their paths often
// carry tokens.
func (c *Config) describeNotify(p func(string, ...any)) {
	if len(c.Notify.Webhooks) == 0 {
		return
	}
	p("")
	p("Notifications")
	for _, wh := range c.Notify.Webhooks {
		signed := "unsigned"
		if wh.SecretEnv != "" {
			signed = "signed with $" + wh.SecretEnv
		}
		p("  webhook %s (%s)", urlOrigin(wh.URL), signed)
	}
}

// NoOpenStackWarning is what check-config and a simulation say about a
// configuration without an openstack section.
const NoOpenStackWarning = "no openstack section: the VM step is skipped, so hosts will be powered off under running VMs"

// describeOpenStack prints step 1 with where its credentials come from
// (never the password), and returns its warnings.
func (c *Config) describeOpenStack(p func(string, ...any)) (warnings []string) {
	o := c.OpenStack
	if !o.Enabled() {
		p("Step 1: OpenStack VMs: skipped (no openstack section)")
		w := NoOpenStackWarning
		if set := setOpenStackVars(); set != "" {
			w += " (" + set + " set in the environment, but not used without the section)"
		}
		return []string{w}
	}
	p("Step 1: OpenStack VMs")
	switch o.Source {
	case SourceOpenrc:
		rc := o.Openrc
		p("  credentials: openrc variables (no cloud configured and no OS_CLOUD), Keystone %s", rc.AuthURL)
		if rc.AppCredential != "" {
			p("  application credential %s, secret from OS_APPLICATION_CREDENTIAL_SECRET", rc.AppCredential)
		} else {
			p("  user %s (domain %s), project %s (domain %s), password from OS_PASSWORD",
				rc.User, orNone(rc.UserDomain), orNone(rc.Project), orNone(rc.ProjectDomain))
		}
		if rc.Region != "" {
			p("  region %s", rc.Region)
		}
	default:
		src := "the standard clouds.yaml search"
		if o.CloudsFile != "" {
			src = o.CloudsFile
		}
		how := "openstack.cloud"
		if o.Source == SourceOSCloud {
			how = "OS_CLOUD"
		}
		p("  credentials: clouds.yaml, cloud %q (named by %s) from %s", o.Cloud, how, src)
	}
	p("  login: one Keystone token, renewed shortly before it expires; after a failed login the next")
	p("  waits 5m, doubling up to 1h; a shutdown or a simulation logs in at once (health in /metrics)")
	p("  os-stop every ACTIVE or ERROR server of all projects, %d at a time", o.Concurrency)
	p("  wait up to %s for SHUTOFF, polling every %s (requests time out after %s)", dur(o.StopTimeout), dur(o.PollInterval), dur(o.RequestTimeout))
	if len(o.Exclude) > 0 {
		p("  never stopped: %s", strings.Join(o.Exclude, ", "))
	} else {
		p("  never stopped: (none)")
	}
	return nil
}

// setOpenStackVars names the OpenStack variables set in the environment.
func setOpenStackVars() string {
	var set []string
	for _, k := range []string{"OS_CLOUD", "OS_AUTH_URL"} {
		if os.Getenv(k) != "" {
			set = append(set, k)
		}
	}
	return strings.Join(set, " and ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func (c *Config) hostLine(w io.Writer, h Host) {
	b := "no BMC"
	if h.BMC != nil {
		b = fmt.Sprintf("BMC %s %s as %s, timeout %s", h.BMC.Protocol, joinHostPort(h.BMC.Address, h.BMC.Port), h.BMC.User, dur(h.BMC.Timeout))
	}
	fmt.Fprintf(w, "    %s\t%s\t%s\tssh %s\t%q\t%s\n", h.Name, h.Role, h.Address, h.SSH.User, h.SSH.PoweroffCommand, b)
}

func (c *Config) sshUser(host string) string {
	if h, ok := c.Host(host); ok {
		return h.SSH.User
	}
	return c.SSH.User
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

func metricsText(access string) string {
	switch access {
	case MetricsOpen:
		return "open to all"
	case MetricsOff:
		return "off"
	default:
		return "for read tokens"
	}
}

// urlOrigin shows scheme://host only: the path may hold a token.
func urlOrigin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Scheme + "://" + u.Host
}

// dur prints 5m instead of 5m0s.
func dur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
