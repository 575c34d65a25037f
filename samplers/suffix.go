package samplers

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// Suffix is the part of a flushed value's name after its series' name: ""
// for the series' own value, ".max", ".99percentile" and so on. It is an
// index into a table of the suffixes in use, so an InterMetric carries it in
// 4 bytes rather than a 16-byte string header; a flush of 100,000 series
// holds about 220,000 InterMetrics.
//
// The table only grows. Its entries are the aggregates below and the
// percentiles of the config, so it stays a few dozen entries long.
type Suffix uint32

// The suffixes of the series' own value and of the histogram aggregates.
const (
	NoSuffix Suffix = iota
	SuffixMax
	SuffixMin
	SuffixSum
	SuffixAvg
	SuffixCount
	SuffixMedian
)

var suffixTable struct {
	mu    sync.Mutex // held to add a name
	index map[string]Suffix
	// names is read without the lock. A name is written past the end of
	// the slice readers hold, then published with the longer slice.
	names atomic.Pointer[[]string]
}

func init() {
	names := []string{"", ".max", ".min", ".sum", ".avg", ".count", ".median"}
	suffixTable.index = make(map[string]Suffix, len(names))
	for i, n := range names {
		suffixTable.index[n] = Suffix(i)
	}
	suffixTable.names.Store(&names)
}

// SuffixOf returns the Suffix of name, adding it to the table when it is
// new. It takes a lock; callers look suffixes up once (NewPercentiles does)
// and keep them.
func SuffixOf(name string) Suffix {
	suffixTable.mu.Lock()
	defer suffixTable.mu.Unlock()
	if s, ok := suffixTable.index[name]; ok {
		return s
	}
	names := *suffixTable.names.Load()
	s := Suffix(len(names))
	names = append(names, name)
	suffixTable.index[name] = s
	suffixTable.names.Store(&names)
	return s
}

// String returns the suffix's text. A value that SuffixOf did not return
// prints as Suffix(n).
func (s Suffix) String() string {
	names := *suffixTable.names.Load()
	if int(s) < len(names) {
		return names[s]
	}
	return "Suffix(" + strconv.FormatUint(uint64(s), 10) + ")"
}
