package samplers

import (
	"strconv"
	"sync"
	"testing"
	"unsafe"
)

func TestSuffixNames(t *testing.T) {
	for s, want := range map[Suffix]string{
		NoSuffix: "", SuffixMax: ".max", SuffixMin: ".min", SuffixSum: ".sum",
		SuffixAvg: ".avg", SuffixCount: ".count", SuffixMedian: ".median",
	} {
		if got := s.String(); got != want {
			t.Errorf("Suffix(%d).String() = %q, want %q", s, got, want)
		}
		if got := SuffixOf(want); got != s {
			t.Errorf("SuffixOf(%q) = %d, want %d", want, got, s)
		}
	}
	a := SuffixOf(".test_suffix_names")
	if b := SuffixOf(".test_suffix_names"); a != b {
		t.Errorf("SuffixOf gave %d then %d for one name", a, b)
	}
	if got := a.String(); got != ".test_suffix_names" {
		t.Errorf("String() = %q", got)
	}
	if got := Suffix(1 << 31).String(); got != "Suffix(2147483648)" {
		t.Errorf("unknown suffix prints %q", got)
	}
}

// TestSuffixConcurrent adds names while others read theirs back; run under
// -race it checks that names published past the readers' slices are safe.
func TestSuffixConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				name := ".concurrent_" + strconv.Itoa(g) + "_" + strconv.Itoa(i)
				s := SuffixOf(name)
				if got := s.String(); got != name {
					t.Errorf("SuffixOf(%q).String() = %q", name, got)
					return
				}
				if got := SuffixMedian.String(); got != ".median" {
					t.Errorf("SuffixMedian.String() = %q", got)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// A flush of 100,000 series holds about 220,000 InterMetrics at once; each
// 16 bytes more is 3.5 MB more heap.
func TestInterMetricSize(t *testing.T) {
	if n := unsafe.Sizeof(InterMetric{}); n != 32 {
		t.Errorf("InterMetric is %d bytes, want 32", n)
	}
}
