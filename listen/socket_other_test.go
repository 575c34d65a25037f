//go:build !linux

package listen

import "time"

// wakeWithin bounds how long a test waits for a woken reader.
const wakeWithin = 5 * time.Second

// truncationReported is false: this reader cannot tell a datagram was
// cut, and the ingester sees only that it fills the whole buffer.
const truncationReported = false

// readerDrains is false: a stopped reader here returns at wake's deadline
// without reading what the kernel still holds.
const readerDrains = false
