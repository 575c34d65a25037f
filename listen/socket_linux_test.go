//go:build linux

package listen

// wakeWithin bounds how long a test waits for a woken reader: shorter than
// the idle wait's receive timeout, so that only wake can end the wait in
// time.
const wakeWithin = readIdleTimeout / 2

// truncationReported says the reader marks a datagram longer than its
// buffer as truncated (recvmmsg's MSG_TRUNC).
const truncationReported = true

// readerDrains says a stopped reader still reads what the kernel queued.
const readerDrains = true
