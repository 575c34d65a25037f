package forward

import (
	"context"
	"time"
)

// The parts of an Importer that GRPCServer shares with ServeHTTP, so that
// both transports merge into the same Merger, answer a batch id merged by
// either as a duplicate, and count against one bound on the imports in
// progress (ImporterConfig.MaxConcurrency). They are read here only, so
// that a change to the Importer's fields is met in this one file.

// grpcMerger is the Merger imports go to.
func (im *Importer) grpcMerger() Merger { return im.merger }

// grpcBatches is the memory of the batch ids merged recently.
func (im *Importer) grpcBatches() *batchMemory { return im.batches }

// grpcTakePlace takes a place among the imports in progress, over every
// transport (ImporterConfig.MaxConcurrency), waiting for one as /import
// does; grpcLeavePlace gives it back. grpcBusyMessage is the answer when
// there is none.
func (im *Importer) grpcTakePlace(ctx context.Context) (waited, ok bool) {
	return im.takePlace(ctx)
}
func (im *Importer) grpcLeavePlace()         { im.leavePlace() }
func (im *Importer) grpcBusyMessage() string { return im.busyMessage() }

// grpcNow is the clock of the batch memory.
func (im *Importer) grpcNow() time.Time { return im.now() }
