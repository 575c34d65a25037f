package stdout

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veneur/veneur/plugins"
	"github.com/veneur/veneur/samplers"
)

func testEnv() plugins.Env {
	return plugins.Env{Common: plugins.Common{Hostname: "box", Tags: []string{"env:dev"}, Interval: time.Hour}}
}

func TestPrintBatch(t *testing.T) {
	var out bytes.Buffer
	s := New(&out, testEnv())
	if s.Name() != "stdout" {
		t.Errorf("Name() = %q", s.Name())
	}
	c := &samplers.Series{Name: "c", Tags: []string{"a", "b"}}
	h := &samplers.Series{Name: "h", Host: "web1", Device: "sda"}
	err := s.Flush(context.Background(), &plugins.Batch{
		Metrics: []samplers.InterMetric{
			{Series: c, Value: 3.0 / 3600, Timestamp: 1000, Kind: samplers.RateKind},
			{Series: h, Suffix: samplers.SuffixOf(".50percentile"), Value: 2.3333333333333335, Timestamp: 1000},
			{Series: &samplers.Series{Name: "g"}, Value: 1e21, Timestamp: 1700000000},
			{Series: &samplers.Series{Name: "n"}, Value: math.NaN(), Timestamp: 1000},
		},
		Events: []samplers.Event{
			{Title: "title", Text: "text", Timestamp: 1000, Tags: []string{"a"}},
			{Title: "Deploy", Text: "v42 is out\nall \"green\"", Timestamp: 1000, Host: "web1",
				AggregationKey: "deploys", Priority: "low", SourceType: "ci", AlertType: "success"},
		},
		Checks: []samplers.ServiceCheck{
			{Name: "chk", Status: 1, Timestamp: 1000, Message: "it broke"},
			{Name: "db.up", Status: 2, Timestamp: 1700000000, Host: "db1", Tags: []string{"role:primary"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "flush 1970-01-01T00:16:40Z c rate 0.0008333333333333334 interval=3600 host=box tags=[a b env:dev]\n" +
		"flush 1970-01-01T00:16:40Z h.50percentile gauge 2.3333333333333335 host=web1 device=sda tags=[env:dev]\n" +
		"flush 2023-11-14T22:13:20Z g gauge 1e+21 host=box tags=[env:dev]\n" +
		"flush 1970-01-01T00:16:40Z n gauge NaN host=box tags=[env:dev]\n" +
		`event 1970-01-01T00:16:40Z "title" "text" host=box tags=[a env:dev]` + "\n" +
		`event 1970-01-01T00:16:40Z "Deploy" "v42 is out\nall \"green\"" host=web1 aggregation_key=deploys priority=low source_type=ci alert_type=success tags=[env:dev]` + "\n" +
		`check 1970-01-01T00:16:40Z chk status=1 host=box message="it broke" tags=[env:dev]` + "\n" +
		`check 2023-11-14T22:13:20Z db.up status=2 host=db1 message="" tags=[role:primary env:dev]` + "\n"
	if got := out.String(); got != want {
		t.Errorf("printed\n%s\nwant\n%s", got, want)
	}
}

// Without a configured hostname a value names no host and an event an
// empty one; without configured tags the item's own are printed.
func TestPrintWithoutDefaults(t *testing.T) {
	var out bytes.Buffer
	s := New(&out, plugins.Env{Common: plugins.Common{Interval: 10 * time.Second}})
	err := s.Flush(context.Background(), &plugins.Batch{
		Metrics: []samplers.InterMetric{{Series: &samplers.Series{Name: "r", Tags: []string{"k:v"}}, Value: 0.5, Timestamp: 0, Kind: samplers.RateKind}},
		Events:  []samplers.Event{{Title: "t", Text: "x", Timestamp: 0}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "flush 1970-01-01T00:00:00Z r rate 0.5 interval=10 tags=[k:v]\n" +
		`event 1970-01-01T00:00:00Z "t" "x" host= tags=[]` + "\n"
	if got := out.String(); got != want {
		t.Errorf("printed\n%s\nwant\n%s", got, want)
	}
}

func TestPrintEmptyBatch(t *testing.T) {
	var out bytes.Buffer
	if err := New(&out, testEnv()).Flush(context.Background(), &plugins.Batch{}); err != nil || out.Len() != 0 {
		t.Errorf("an empty batch printed %q (err %v)", out.String(), err)
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPrintErrors(t *testing.T) {
	s := New(failingWriter{}, testEnv())
	m := []samplers.InterMetric{{Series: &samplers.Series{Name: "m"}, Value: 1}}
	ev := []samplers.Event{{Title: "t"}}
	for _, c := range []struct {
		name  string
		b     *plugins.Batch
		parts string
	}{
		{"metrics", &plugins.Batch{Metrics: m}, `""`},
		{"events", &plugins.Batch{Events: ev}, `"events"`},
		{"both", &plugins.Batch{Metrics: m, Events: ev}, `"" "events"`},
	} {
		err := s.Flush(context.Background(), c.b)
		var got []string
		for _, p := range plugins.Parts(err) {
			got = append(got, strconv.Quote(p.Part))
			if p.Err.Error() != "disk full" {
				t.Errorf("%s: part %q: %v", c.name, p.Part, p.Err)
			}
		}
		if strings.Join(got, " ") != c.parts {
			t.Errorf("%s: err %v has parts %s, want %s", c.name, err, got, c.parts)
		}
	}
}
