//go:build race

package forward

// raceDetector is whether the tests run with the race detector, which
// makes the largest of them too slow to be worth it.
const raceDetector = true
