// Package e2e holds the end-to-end tests of the veneur daemon: each test
// builds on a real veneur process started from a generated config, feeds it
// DogStatsD over loopback UDP and checks what arrives at a stand-in for the
// Datadog series API. The package has no non-test code.
package e2e
