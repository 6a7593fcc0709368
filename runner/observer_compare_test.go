package runner

import "testing"

// TestObservedConnectionsAreComparable: connections wrapped with an
// observer are kept in interface values (the warm-connection pool compares
// them); comparing them must never panic, whatever Observers returned.
func TestObservedConnectionsAreComparable(t *testing.T) {
	o := Observers(nil, Observers())
	var a, b HostConn = observedConn{nil, o}, observedConn{nil, o}
	if a != b { // panics if o is an uncomparable dynamic type
		t.Fatal("the same wrapped connection compares unequal")
	}
	var p, q PowerController = observedBMC{nil, o}, observedBMC{nil, Observers()}
	if p == q {
		t.Fatal("connections with different observers compare equal")
	}
}
