package sitesim

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// computeServices are the nova-compute services of the simulated cloud:
// one per compute host, up unless SetComputeService said otherwise.
type computeServices struct {
	hosts []string        // every host known, in the order first seen
	down  map[string]bool // hosts whose service is down
	// starts counts os-start requests per server; startTimes keeps when.
	starts     int
	startsByID map[string]int
	activeAt   map[string]time.Time
}

// SetComputeService sets whether host's nova-compute service is up, as the
// site does when a compute host powers off or finishes booting. Servers
// whose os-start was accepted while it was down start once it is up.
func (n *Nova) SetComputeService(host string, up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.knowHostLocked(host)
	if n.compute.down == nil {
		n.compute.down = map[string]bool{}
	}
	n.compute.down[host] = !up
	if !up {
		return
	}
	for _, vm := range n.vms {
		if vm.awaitsCompute && vm.Host == host {
			n.bootLocked(vm)
		}
	}
}

// ComputeServiceUp reports whether host's nova-compute service is up.
func (n *Nova) ComputeServiceUp(host string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.compute.down[host]
}

func (n *Nova) knowHostLocked(host string) {
	if host != "" && !slices.Contains(n.compute.hosts, host) {
		n.compute.hosts = append(n.compute.hosts, host)
	}
}

// StartRequestsFor returns how many os-start requests reached server id.
func (n *Nova) StartRequestsFor(id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.compute.startsByID[id]
}

// StartRequests returns how many os-start requests reached the cloud.
func (n *Nova) StartRequests() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.compute.starts
}

// ActiveAt returns when server id last became ACTIVE through an os-start
// (zero if it never did).
func (n *Nova) ActiveAt(id string) time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.compute.activeAt[id]
}

// TaskState returns server id's task_state ("" when idle or unknown).
func (n *Nova) TaskState(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if vm, ok := n.byID[id]; ok {
		return vm.taskState
	}
	return ""
}

// start applies os-start as Nova's compute API does: allowed from vm_state
// stopped with no task in progress, otherwise 409. As current Nova does, the
// API accepts it while the server's compute service is down: the server
// stays in task_state powering-on until the service is back.
func (n *Nova) start(w http.ResponseWriter, id string) (int, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.compute.starts++
	if n.compute.startsByID == nil {
		n.compute.startsByID = map[string]int{}
	}
	n.compute.startsByID[id]++
	if n.injectFault(w) {
		return 0, ""
	}
	vm, ok := n.byID[id]
	if !ok {
		return http.StatusNotFound, fmt.Sprintf("Instance %s could not be found.", id)
	}
	if vm.taskState != "" {
		return http.StatusConflict, fmt.Sprintf("Cannot 'start' instance %s while it is in task_state %s", id, vm.taskState)
	}
	if vm.Status != "SHUTOFF" {
		return http.StatusConflict, fmt.Sprintf("Cannot 'start' instance %s while it is in vm_state %s", id, novaVMState(vm.Status))
	}
	vm.taskState = "powering-on"
	vm.updated = time.Now().UTC()
	vm.gen++
	if n.compute.down[vm.Host] {
		vm.awaitsCompute = true
		return http.StatusAccepted, ""
	}
	n.bootLocked(vm)
	return http.StatusAccepted, ""
}

// bootLocked lets a server in powering-on become ACTIVE after its start
// delay; n.mu is held.
func (n *Nova) bootLocked(vm *novaVM) {
	vm.awaitsCompute = false
	gen := vm.gen
	vm.timer = time.AfterFunc(cmp.Or(vm.StartDelay, vm.StopDelay), func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed || vm.gen != gen {
			return
		}
		if n.compute.down[vm.Host] {
			// The host went down again while the guest booted.
			vm.awaitsCompute = true
			return
		}
		vm.timer = nil
		vm.taskState = ""
		vm.Status = "ACTIVE"
		vm.gen++
		vm.updated = time.Now().UTC()
		if n.compute.activeAt == nil {
			n.compute.activeAt = map[string]time.Time{}
		}
		n.compute.activeAt[vm.ID] = time.Now()
	})
}

// novaService is one entry of GET /os-services (microversion 2.1).
type novaService struct {
	ID             int     `json:"id"`
	Binary         string  `json:"binary"`
	Host           string  `json:"host"`
	Zone           string  `json:"zone"`
	Status         string  `json:"status"`
	State          string  `json:"state"`
	UpdatedAt      string  `json:"updated_at"`
	DisabledReason *string `json:"disabled_reason"`
}

// listServices answers GET /os-services, filtered by binary and host as
// Nova filters them: one nova-compute service per compute host.
func (n *Nova) listServices(w http.ResponseWriter, r *http.Request, _ novaToken) {
	n.mu.Lock()
	if n.injectFault(w) {
		n.mu.Unlock()
		return
	}
	hosts := slices.Clone(n.compute.hosts)
	for _, vm := range n.vms {
		if vm.Host != "" && !slices.Contains(hosts, vm.Host) {
			hosts = append(hosts, vm.Host)
		}
	}
	down := n.compute.down
	out := []novaService{}
	q := r.URL.Query()
	for i, h := range hosts {
		if b := q.Get("binary"); b != "" && b != "nova-compute" {
			continue
		}
		if hq := q.Get("host"); hq != "" && hq != h {
			continue
		}
		state := "up"
		if down[h] {
			state = "down"
		}
		out = append(out, novaService{ID: i + 1, Binary: "nova-compute", Host: h, Zone: "nova", Status: "enabled",
			State: state, UpdatedAt: time.Now().UTC().Format(novaLaunchedFormat)})
	}
	n.mu.Unlock()
	novaJSON(w, http.StatusOK, map[string]any{"services": out})
}
