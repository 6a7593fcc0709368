package config

import (
	"time"

	"go.yaml.in/yaml/v3"
)

// Web configures the browser pages.
type Web struct {
	// SimulationMaxAge is how old the last successful simulation may be
	// before the overview shows it as a warning: an integration not
	// tested for that long (a changed BMC password, a new host key, a
	// Keystone endpoint moved) is the usual cause of a failed shutdown.
	SimulationMaxAge time.Duration
}

// DefaultSimulationMaxAge asks for a simulation every week: often enough
// that a change on the site is caught before the next outage, rarely
// enough that a weekly scheduled simulation never shows a warning.
const DefaultSimulationMaxAge = 7 * 24 * time.Hour

// minSimulationMaxAge rejects a value that would warn all the time ("720s"
// meant as 720h).
const minSimulationMaxAge = time.Hour

// web reads the web section: {simulation_max_age: 168h}.
func (d *decoder) web(n *yaml.Node, c *Config) {
	m := d.mapping(n, "web", "simulation_max_age")
	if m == nil {
		return
	}
	if e, ok := m["simulation_max_age"]; ok {
		v, ok := d.duration(e.val, "web.simulation_max_age")
		switch {
		case !ok:
		case v < minSimulationMaxAge:
			d.fail(e.val, "web.simulation_max_age", "must be at least %s, got %s (a simulation is a login to every host and BMC, not a heartbeat)", dur(minSimulationMaxAge), e.val.Value)
		default:
			c.Web.SimulationMaxAge = v
		}
	}
}
