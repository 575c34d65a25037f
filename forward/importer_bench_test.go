package forward

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/veneur/veneur/samplers"
)

// BenchmarkImport is the /import path of one request of n small digests,
// as a local sends it (deflate) and without compression: bytes are those
// of the JSON.
func BenchmarkImport(b *testing.B) {
	for _, n := range []int{100, 10_000} {
		digest := digestOf(b, 1, 2, 3, 5, 8, 13, 21)
		fwd := make([]samplers.Forwarded, n)
		for i := range fwd {
			fwd[i] = samplers.Forwarded{Type: samplers.HistogramMetric, Name: fmt.Sprintf("request.latency.%d", i), Tags: []string{"env:prod", "svc:api"}, Digest: digest}
		}
		metrics := make([]JSONMetric, n)
		for i := range fwd {
			metrics[i] = encode(b, fwd[i])
		}
		body := marshal(b, metrics)
		for _, enc := range []struct {
			name string
			body []byte
		}{{"identity", body}, {"deflate", deflate(body)}} {
			b.Run(fmt.Sprintf("%s/%d", enc.name, n), func(b *testing.B) {
				im := NewImporter(&countingMerger{}, ImporterConfig{})
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					if rec := postImport(b, im, contentEncoding(enc.name), enc.body); rec.Code != http.StatusAccepted {
						b.Fatalf("%d %s", rec.Code, rec.Body.String())
					}
				}
			})
		}
	}
}

// contentEncoding is the Content-Encoding header of a benchmark's
// encoding: none for identity.
func contentEncoding(name string) string {
	if name == "identity" {
		return ""
	}
	return name
}

// BenchmarkImportBomb is the refusal of a deflated GiB of one byte: of
// whitespace (refused once the whitespace allowance is read), and of one
// long string (once the element cap is). Bytes are those sent.
func BenchmarkImportBomb(b *testing.B) {
	for _, c := range []struct {
		name, prefix string
		fill         byte
		suffix       string
		code         int
	}{
		{"whitespace", "[", ' ', "]", http.StatusBadRequest},
		{"string", `["`, 'x', `"]`, http.StatusRequestEntityTooLarge},
	} {
		body := bomb(b, c.prefix, c.fill, 1<<10, c.suffix)
		b.Run(c.name, func(b *testing.B) {
			im := NewImporter(&countingMerger{}, ImporterConfig{})
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if rec := postImport(b, im, "deflate", body); rec.Code != c.code {
					b.Fatalf("%d %s", rec.Code, short(rec.Body.String()))
				}
			}
		})
	}
}
