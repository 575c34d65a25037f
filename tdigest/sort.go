package tdigest

import (
	"math"
	"slices"
)

// sortCentroids sorts by mean. Means are never NaN.
func sortCentroids(s []centroid) {
	slices.SortFunc(s, func(a, b centroid) int {
		if a.mean < b.mean {
			return -1
		}
		if a.mean > b.mean {
			return 1
		}
		return 0
	})
}

// floatKey maps a float64 to a uint64 with the same order (for non-NaN).
func floatKey(f float64) uint64 {
	b := math.Float64bits(f)
	if b>>63 != 0 {
		return ^b
	}
	return b | 1<<63
}

func keyFloat(k uint64) float64 {
	if k>>63 != 0 {
		return math.Float64frombits(k &^ (1 << 63))
	}
	return math.Float64frombits(^k)
}

// sortFloats sorts f (no NaNs). It radix-sorts (LSD, one byte per pass,
// skipping bytes every key shares) on the top 40 bits of the
// order-preserving bit patterns, which orders all but values within about
// 4e-9 of each other relatively, then finishes with an insertion sort that
// falls back to a comparison sort if the data needs too many moves. tmp
// must be as long as f.
func sortFloats(f []float64, tmp []uint64) {
	n := len(f)
	if n <= 32 {
		slices.Sort(f)
		return
	}
	const lowByte = 3
	var counts [8][256]uint32
	for _, x := range f {
		k := floatKey(x)
		counts[3][byte(k>>24)]++
		counts[4][byte(k>>32)]++
		counts[5][byte(k>>40)]++
		counts[6][byte(k>>48)]++
		counts[7][byte(k>>56)]++
	}
	// Keys ping-pong between tmp and f, which holds them as bit patterns.
	const raw, inTmp, inF = 0, 1, 2
	where := raw
	first := floatKey(f[0])
	tmp = tmp[:n]
	for p := lowByte; p < 8; p++ {
		c := &counts[p]
		sh := uint(8 * p)
		if c[byte(first>>sh)] == uint32(n) {
			continue
		}
		var sum uint32
		for i := range c {
			v := c[i]
			c[i] = sum
			sum += v
		}
		switch where {
		case raw, inF:
			for _, x := range f {
				k := math.Float64bits(x)
				if where == raw {
					k = floatKey(x)
				}
				b := byte(k >> sh)
				tmp[c[b]] = k
				c[b]++
			}
			where = inTmp
		case inTmp:
			for _, k := range tmp {
				b := byte(k >> sh)
				f[c[b]] = math.Float64frombits(k)
				c[b]++
			}
			where = inF
		}
	}
	switch where {
	case inTmp:
		for i, k := range tmp {
			f[i] = keyFloat(k)
		}
	case inF:
		for i, x := range f {
			f[i] = keyFloat(math.Float64bits(x))
		}
	}
	insertionFinish(f)
}

// insertionFinish completes the sort of nearly sorted f, switching to
// slices.Sort if that takes more than a few moves per element.
func insertionFinish(f []float64) {
	budget := 4 * len(f)
	for i := 1; i < len(f); i++ {
		x := f[i]
		if x >= f[i-1] {
			continue
		}
		j := i
		for j > 0 && f[j-1] > x {
			f[j] = f[j-1]
			j--
		}
		f[j] = x
		budget -= i - j
		if budget < 0 {
			slices.Sort(f)
			return
		}
	}
}
