package veneur

import (
	"bytes"
	"testing"

	"github.com/veneur/veneur/samplers"
)

// FuzzHandlePacket feeds arbitrary datagrams through a reader and a worker:
// nothing may panic, every sample must come from a line the parser accepts,
// and every line is a sample source, an event or service check, or a
// counted error.
func FuzzHandlePacket(f *testing.F) {
	for _, s := range []string{
		"a:1|c\nb:2|g\n", "a:1|c\nbad\nc:u|s", "h:1:2:3|h|#x,y", "\n\n\n", "a:1|c|@0.5|#host:h,device:d\r\n",
		"x:NaN|g\ny:1|ms", "_e{1,1}:a|b\n_sc|c|0",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("a:1|c\nb:2|c\nccccccc:3|c"), true)
	f.Fuzz(func(t *testing.T, packet []byte, truncated bool) {
		s := newServer(t, "num_workers: 2\nmetric_max_length: 64\n")
		in := s.newIngester()
		in.handlePacket(bytes.Clone(packet), truncated)

		var errs uint64
		for _, n := range in.counts.parseErrs {
			errs += n
		}
		good := in.counts.lines - errs - s.events.nEvents - s.events.nChecks
		samples := 0
		for wi, b := range in.pending {
			if b == nil {
				continue
			}
			samples += len(b.samples)
			for _, smp := range b.samples {
				key := b.buf[smp.keyOff : smp.keyOff+smp.keyLen]
				if _, err := samplers.DecodeKey(string(key)); err != nil {
					t.Fatalf("sample with malformed key %q", key)
				}
				if smp.rate <= 0 || smp.rate > 1 {
					t.Fatalf("sample with rate %v", smp.rate)
				}
			}
			s.workers[wi].process(b)
		}
		if uint64(samples) < good {
			t.Fatalf("%d good lines gave only %d samples", good, samples)
		}
		if good == 0 && samples != 0 {
			t.Fatalf("samples without a good line")
		}
	})
}
