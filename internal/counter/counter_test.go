package counter

import (
	"errors"
	"fmt"
	"testing"

	"github.com/veneur/veneur/internal/statstest"
)

var (
	errA = errors.New("a")
	errB = errors.New("b")
)

func TestIndexFallsBackToOther(t *testing.T) {
	c := NewErrors(Cause{Name: "a", Err: errA}, Cause{Name: "b", Err: errB})
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errA, "a"},
		{errB, "b"},
		{fmt.Errorf("wrapped: %w", errB), "b"},
		{errors.New("nobody listed this"), Other},
		{nil, Other},
	} {
		if got := c.Name(c.Index(tc.err)); got != tc.want {
			t.Errorf("cause of %v = %q, want %q", tc.err, got, tc.want)
		}
	}
	if c.Len() != 3 || c.Name(c.Len()-1) != Other {
		t.Errorf("causes end with %q (%d in all), want %q last", c.Name(c.Len()-1), c.Len(), Other)
	}
	n := New("x", "y")
	if n.IndexOf("y") != 1 || n.IndexOf("zzz") != 2 {
		t.Errorf("IndexOf: y at %d, unknown at %d", n.IndexOf("y"), n.IndexOf("zzz"))
	}
}

func TestReportSwapsAndTags(t *testing.T) {
	c := New("x", "y")
	c.Add(0, 2)
	c.AddErr(errors.New("unlisted"))
	rec := &statstest.Recorder{}
	if total := c.Report(rec, "m.error_total", "part:p"); total != 3 {
		t.Errorf("Report total = %d, want 3", total)
	}
	if n := rec.Sum("m.error_total", "cause:x", "part:p"); n != 2 {
		t.Errorf("cause:x = %d, want 2", n)
	}
	if n := rec.Sum("m.error_total", "cause:other"); n != 1 {
		t.Errorf("cause:other = %d, want 1", n)
	}
	if n := rec.Sum("m.error_total", "cause:y"); n != 0 {
		t.Errorf("cause:y = %d, want nothing sent", n)
	}
	// Counts start again after a report.
	if total := c.Report(rec, "m.error_total"); total != 0 {
		t.Errorf("second Report total = %d, want 0", total)
	}
}

func TestLocalPublishes(t *testing.T) {
	c := NewErrors(Cause{Name: "a", Err: errA})
	l := c.NewLocal()
	l.AddErr(errA)
	l.AddErr(errA)
	l.Add(1, 5)
	rec := &statstest.Recorder{}
	if total := c.Report(rec, "m"); total != 0 {
		t.Fatalf("unpublished counts were reported: %d", total)
	}
	l.Publish()
	l.Publish() // a second publish adds nothing
	c.Report(rec, "m")
	if a, o := rec.Sum("m", "cause:a"), rec.Sum("m", "cause:other"); a != 2 || o != 5 {
		t.Errorf("a=%d other=%d, want 2 and 5", a, o)
	}
}
