package volumes

import (
	"testing"
	"time"
)

// TestReconfigureKeepsWhatItIsNotGiven: a reload that names one option
// changes that one, and leaves the others as Open or an earlier reload set
// them.
func TestReconfigureKeepsWhatItIsNotGiven(t *testing.T) {
	policy := SizePolicy{NamespaceBytes: 1 << 30}
	s, err := Open(t.TempDir(), WithLockTimeout(time.Second), WithSizePolicy(policy))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var repaired []string
	s.Reconfigure(WithFormatBudget(2*time.Second), WithRepairs(func(r string) { repaired = append(repaired, r) }))
	if got := time.Duration(s.lockTimeout.Load()); got != time.Second {
		t.Errorf("lock timeout = %v, want the 1s Open set", got)
	}
	if got := time.Duration(s.formatBudget.Load()); got != 2*time.Second {
		t.Errorf("format budget = %v, want the 2s of the reload", got)
	}
	if s.policy != policy {
		t.Errorf("size policy = %+v, want the %+v Open set", s.policy, policy)
	}
	s.Reconfigure(WithSizePolicy(SizePolicy{}), WithLockTimeout(0))
	if got := time.Duration(s.lockTimeout.Load()); got != 0 || s.policy != (SizePolicy{}) {
		t.Errorf("after a reload to the defaults: lock timeout %v, policy %+v", got, s.policy)
	}
	if repaired != nil {
		t.Errorf("Reconfigure reported repairs %v; only Open repairs", repaired)
	}
}
