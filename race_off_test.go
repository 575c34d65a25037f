//go:build !race

package veneur

const raceEnabled = false
