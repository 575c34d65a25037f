package datadog

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/klauspost/compress/flate"

	"github.com/veneur/veneur/internal/yield"
	"github.com/veneur/veneur/samplers"
)

// levelBody is one body of series as the sink writes it, uncompressed:
// flush_max_per_body (5,000) values of the load benchmark's workload c
// (40% counters, 20% gauges, 10% sets, 30% histograms and timers flushed
// as min, max, count and two percentiles), named and tagged as its lines
// are, with values of the kind each carries.
func levelBody(tb testing.TB) []byte {
	d, err := New(Config{APIHostname: "http://x", APIKey: "k3y", MaxPerBody: 5000}, testEnv(nil))
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	svcs := []string{"api", "web", "db", "queue", "auth"}
	var metrics []samplers.InterMetric
	for idx := 0; len(metrics) < 5000; idx++ {
		tags := []string{"env:load", "shard:" + strconv.Itoa(idx%16), "svc:" + svcs[idx%5]}
		m := samplers.InterMetric{Timestamp: 1764590400}
		switch k := idx % 20; {
		case k < 8:
			m.Series = &samplers.Series{Name: "lg.c." + strconv.Itoa(idx), Tags: tags}
			m.Value, m.Kind = float64(1+rng.IntN(3))/2, samplers.RateKind
		case k < 12:
			m.Series = &samplers.Series{Name: "lg.g." + strconv.Itoa(idx), Tags: tags}
			m.Value = float64(rng.IntN(100000)) / 100
		case k < 14:
			m.Series = &samplers.Series{Name: "lg.s." + strconv.Itoa(idx), Tags: tags}
			m.Value = float64(1 + rng.IntN(3))
		default:
			m.Series = &samplers.Series{Name: "lg.h." + strconv.Itoa(idx), Tags: tags}
			lo, hi := float64(rng.IntN(5000))/10, 500+float64(rng.IntN(5000))/10
			for _, v := range []struct {
				suffix string
				value  float64
				kind   samplers.Kind
			}{{".min", lo, samplers.GaugeKind}, {".max", hi, samplers.GaugeKind}, {".count", 0.5, samplers.RateKind},
				{".50percentile", (lo + hi) / 2, samplers.GaugeKind}, {".99percentile", hi * 0.99, samplers.GaugeKind}} {
				m.Suffix, m.Value, m.Kind = samplers.SuffixOf(v.suffix), v.value, v.kind
				metrics = append(metrics, m)
			}
			continue
		}
		metrics = append(metrics, m)
	}
	var body bytes.Buffer
	if _, err := d.writeSeries(&body, metrics[:5000], new(yield.Slicer)); err != nil {
		tb.Fatal(err)
	}
	return body.Bytes()
}

// BenchmarkCompressionLevels compresses one body at each deflate level of
// the compressor the sink uses (klauspost/compress/flate): CPU per body
// against bytes per series sent. The sink uses level 1 (BestSpeed); see
// docs/benchmark.md for the figures and the choice.
func BenchmarkCompressionLevels(b *testing.B) {
	body := levelBody(b)
	for _, level := range []int{flate.HuffmanOnly, 1, 2, 3, 4, 5, 6, 7, 9} {
		b.Run(fmt.Sprintf("level=%d", level), func(b *testing.B) {
			var out bytes.Buffer
			fw, err := flate.NewWriter(&out, level)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				out.Reset()
				fw.Reset(&out)
				if _, err := fw.Write(body); err != nil {
					b.Fatal(err)
				}
				if err := fw.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(out.Len())/5000, "B/series")
			b.ReportMetric(float64(len(body))/float64(out.Len()), "ratio")
		})
	}
}

// The benchmark's body is what it says: 5,000 series objects that decode.
func TestLevelBody(t *testing.T) {
	body := levelBody(t)
	if n := bytes.Count(body, []byte(`{"metric":`)); n != 5000 {
		t.Fatalf("body holds %d series, want 5000", n)
	}
	if !bytes.Contains(body, []byte(`"metric":"lg.h.14.99percentile"`)) || !bytes.Contains(body, []byte(`"tags":["env:load","shard:0","svc:api"`)) {
		t.Errorf("body does not name and tag series as workload c: %.300s", body)
	}
}
