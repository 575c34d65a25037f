package tdigest

import "slices"

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
