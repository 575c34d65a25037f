package veneur

import (
	"bytes"
	"testing"

	"github.com/veneur/veneur/internal/statstest"
)

// FuzzHandlePacket feeds arbitrary datagrams through a reader's ingester
// and the workers: nothing may panic, every series must come from a line
// the parser accepts, and every line is a series sample, an event or
// service check, or a counted error.
func FuzzHandlePacket(f *testing.F) {
	for _, s := range []string{
		"a:1|c\nb:2|g\n", "a:1|c\nbad\nc:u|s", "h:1:2:3|h|#x,y", "\n\n\n", "a:1|c|@0.5|#host:h,device:d\r\n",
		"x:NaN|g\ny:1|ms", "_e{1,1}:a|b\n_sc|c|0",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("a:1|c\nb:2|c\nccccccc:3|c"), true)
	f.Fuzz(func(t *testing.T, packet []byte, truncated bool) {
		p, g := testIngest(t, 2, 64)
		in := g.newIngester()
		in.Packet(bytes.Clone(packet), truncated)
		in.Flush()
		rec := &statstest.Recorder{}
		g.Report(rec)
		events := g.events.swap()
		good := rec.Sum("packet.lines_total") - rec.Sum("packet.error_total") - int64(events.nEvents+events.nChecks)
		p.start(func() {})
		var processed uint64
		series := 0
		for _, iv := range p.stop() {
			processed += iv.processed
			if iv.badKeys > 0 {
				t.Fatalf("%d malformed keys reached a worker", iv.badKeys)
			}
			for _, r := range iv.recs {
				series++
				if r.se.meta.Name == "" {
					t.Fatalf("series without a name")
				}
			}
		}
		if processed < uint64(good) {
			t.Fatalf("%d good lines gave only %d samples", good, processed)
		}
		if good == 0 && (processed != 0 || series != 0) {
			t.Fatalf("samples without a good line")
		}
	})
}
