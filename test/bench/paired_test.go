package main

import (
	"testing"
	"time"
)

// TestPairedRatio: a drift of the load that moves both samples of a round
// alike cancels in the per-round ratio, and one slow sample does not move
// its median.
func TestPairedRatio(t *testing.T) {
	var a, b samples
	for k := range 40 {
		load := time.Duration(100+5*k) * time.Millisecond // drifting up
		b = append(b, load)
		a = append(a, load*105/100)
	}
	a[3] *= 3
	med, lo, hi := pairedRatio(a, b)
	if med < 1.049 || med > 1.051 || lo > med || hi < med || lo < 1.049 || hi > 1.051 {
		t.Errorf("pairedRatio = %.4f (%.4f-%.4f), want 1.05 with a tight interval", med, lo, hi)
	}
	if med, _, _ := pairedRatio(nil, b); med != 0 {
		t.Errorf("pairedRatio without samples = %v, want 0", med)
	}
}
