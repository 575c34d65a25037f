package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zlib"

	"github.com/veneur/veneur/internal/statstest"
	"github.com/veneur/veneur/samplers"
)

// readers is how a test reads through a wrapper: all at once, a byte at a
// time, and in small odd pieces.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one byte", iotest.OneByteReader},
	{"half", iotest.HalfReader},
}

func TestCapReader(t *testing.T) {
	for _, rd := range readers {
		for _, c := range []struct {
			in       string
			max      int64
			want     string
			tooLarge bool
		}{
			{"", 0, "", false},
			{"a", 0, "", true},
			{"abc", 3, "abc", false},
			{"abcd", 3, "abc", true},
			{"abcdefgh", 3, "abc", true},
		} {
			cr := newCapReader(rd.wrap(strings.NewReader(c.in)), c.max)
			got, err := io.ReadAll(cr)
			var tl *tooLargeError
			if string(got) != c.want || errors.As(err, &tl) != c.tooLarge || (!c.tooLarge && err != nil) {
				t.Errorf("%s: %q cut at %d: %q, %v", rd.name, c.in, c.max, got, err)
			}
			if c.tooLarge {
				// The refusal is sticky.
				if n, err := cr.Read(make([]byte, 8)); n != 0 || !errors.As(err, &tl) {
					t.Errorf("%s: %q: read after the refusal: %d, %v", rd.name, c.in, n, err)
				}
			}
		}
	}
	// What fails below is a readError: the body, not what it says.
	broken := errors.New("connection reset")
	_, err := io.ReadAll(newCapReader(io.MultiReader(strings.NewReader("[1,"), iotest.ErrReader(broken)), 100))
	var re *readError
	if !errors.As(err, &re) || !errors.Is(err, broken) {
		t.Errorf("a failed read: %v", err)
	}
}

func TestSpaceSqueezer(t *testing.T) {
	for _, rd := range readers {
		for _, c := range []struct {
			in, want string
			slack    int64
			refused  bool
		}{
			{"", "", 4, false},
			{"[ \t\r\n1 ,\n\n 2 ]\n", "[ 1 , 2 ] ", 100, false},
			// Whitespace in strings is kept, escaped quotes and
			// backslashes do not end them.
			{`{ "a  b" :  "x\"  y" , "c\\"  :  "\\\"  " }`, `{ "a  b" : "x\"  y" , "c\\" : "\\\"  " }`, 100, false},
			{`"\\"   "`, `"\\" "`, 4, false},
			// Whitespace is allowed up to the slack plus four bytes
			// per byte of the rest, one more is refused.
			{"    []", " []", 4, false},
			{"     []", " ", 4, true},
			{"[    ]", "[ ]", 0, false},
			{"[     ]", "[ ", 0, true},
			{"[" + strings.Repeat("1    ", 100) + "]", "[" + strings.Repeat("1 ", 100) + "]", 0, false},
			// 5 bytes each: 8 × 5 is 3 + 4 × 8 and passes, 9 × 5 does not.
			{"[" + strings.Repeat("1     ", 100) + "]", "[1 1 1 1 1 1 1 1 ", 3, true},
			// In a string, whitespace is not a run: it is the rest.
			{`["     "]   `, `["     "] `, 0, false},
		} {
			s := &spaceSqueezer{r: rd.wrap(strings.NewReader(c.in)), slack: c.slack}
			got, err := io.ReadAll(s)
			var ws *whitespaceError
			if string(got) != c.want || errors.As(err, &ws) != c.refused || (!c.refused && err != nil) {
				t.Errorf("%s: %q: %q, %v; want %q", rd.name, c.in, got, err, c.want)
			}
			if c.refused {
				if n, err := s.Read(make([]byte, 8)); n != 0 || !errors.As(err, &ws) {
					t.Errorf("%s: %q: read after the refusal: %d, %v", rd.name, c.in, n, err)
				}
			}
		}
	}
}

// Squeezing whitespace leaves a JSON text the same: valid or not, and of
// the same value.
func TestSpaceSqueezerKeepsJSON(t *testing.T) {
	for _, in := range []string{
		`[1 2]`, `[1, 2]`, `[true false]`, `{"a" "b"}`, `{"a":1,"b" : [ 1 , { } ] }`,
		"[\"a\tb\"]", "[\"a\nb\"]", `"unterminated   `, `[1  ,  2  ]  x`, `  [  ]  `,
		`["\u0020  \\\\  \"  "]`, `[- 1]`, `[1. 5]`, `[1e 5]`, `[tr  ue]`, `{"a":"b"  "c":1}`,
	} {
		s := &spaceSqueezer{r: strings.NewReader(in), slack: 1 << 20}
		out, err := io.ReadAll(s)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		checkSameJSON(t, []byte(in), out)
	}
}

// checkSameJSON fails t unless a and b are both invalid JSON or the same
// value.
func checkSameJSON(t *testing.T, a, b []byte) {
	t.Helper()
	if json.Valid(a) != json.Valid(b) {
		t.Fatalf("%q is valid %v, squeezed %q is valid %v", a, json.Valid(a), b, json.Valid(b))
	}
	if !json.Valid(a) {
		return
	}
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(va, vb) {
		t.Fatalf("%q is %v, squeezed %q is %v", a, va, b, vb)
	}
}

// Each element gets its own allowance: many elements of nearly the cap
// are read, one over it is refused, and so is a body that starts with a
// value over it.
func TestReadJSONArrayElementCap(t *testing.T) {
	elem := func(nameLen int) string {
		return `{"name":"` + strings.Repeat("n", nameLen) + `","type":"counter","tags":[],"value":"AAAAAAAA8D8="}`
	}
	const maxElement = 200
	fits := elem(maxElement - len(elem(0)) - 2) // with ", " before it
	if len(fits) != maxElement-2 {
		t.Fatalf("element of %d bytes", len(fits))
	}
	over := elem(maxElement - len(elem(0)))
	for _, rd := range readers {
		for _, c := range []struct {
			name     string
			body     string
			n        int // elements read
			tooLarge bool
		}{
			{"many that fit", "[" + strings.Repeat(fits+", ", 50) + fits + "]", 51, false},
			{"with whitespace runs", "[ \n " + strings.Repeat(fits+"\n\t\r ,", 50) + fits + "\n]\n", 51, false},
			{"one over", "[" + fits + ", " + over + "]", 1, true},
			{"a long number first", strings.Repeat("1", maxElement+1), 0, true},
			{"a long string first", `"` + strings.Repeat("s", maxElement) + `"`, 0, true},
			{"a long string in", `[` + fits + `,"` + strings.Repeat("s", maxElement) + `"]`, 1, true},
			{"a long number after", `[` + fits + `] ` + strings.Repeat("1", maxElement+1), 1, true},
		} {
			n := 0
			err := readJSONArray(rd.wrap(strings.NewReader(c.body)), streamLimits{element: maxElement, spaceSlack: 1 << 20}, func(i int, m *JSONMetric, size int64) error {
				if i != n || m.Type != "counter" {
					t.Errorf("%s, %s: element %d is %d, %+v", rd.name, c.name, n, i, m)
				}
				// Its size is its own, and the separator before it.
				if size < int64(len(fits)) || size > maxElement {
					t.Errorf("%s, %s: element %d of %d bytes", rd.name, c.name, i, size)
				}
				n++
				return nil
			})
			var tl *tooLargeError
			if n != c.n || errors.As(err, &tl) != c.tooLarge || (!c.tooLarge && err != nil) {
				t.Errorf("%s, %s: %d elements, %v; want %d, too large %v", rd.name, c.name, n, err, c.n, c.tooLarge)
			}
		}
	}
}

// A body is one JSON array of metric objects and whitespace, or it is
// refused whole: each element decodes into a fresh JSONMetric.
func TestReadJSONArrayShape(t *testing.T) {
	for _, c := range []struct {
		body string
		n    int
		err  string // "" for none
	}{
		{`[]`, 0, ""},
		{" \n[ ]\n ", 0, ""},
		{`[{"name":"a","type":"counter"},{"name":"b"}]`, 2, ""},
		{`[null]`, 1, ""},
		{``, 0, "EOF"},
		{`   `, 0, "EOF"},
		{`null`, 0, "starts with <nil>, not ["},
		{`{"name":"a"}`, 0, "starts with {, not ["},
		{`"x"`, 0, "starts with x, not ["},
		{`[`, 0, "unexpected EOF"},
		{`[{"name":"a"},`, 1, "unexpected EOF"},
		{`[{"name":"a"}`, 1, "unexpected EOF"},
		{`[{"name":`, 0, "unexpected EOF"},
		{`[1]`, 0, "cannot unmarshal number"},
		{`[[]]`, 0, "cannot unmarshal array"},
		{`[{"name":1}]`, 0, "cannot unmarshal number"},
		{`[{"name":"a"} {"name":"b"}]`, 1, "expected comma after array element"},
		{`[{"name":"a"}}`, 1, "invalid character '}'"},
		{`[] []`, 0, "body has data after the JSON array"},
		{`[]]`, 0, "body has data after the JSON array"},
		{`[]}`, 0, "body has data after the JSON array"},
		{`[] x`, 0, "body has data after the JSON array"},
		{`[] 1`, 0, "body has data after the JSON array"},
		{`[] "`, 0, "unexpected EOF"},
	} {
		var names []string
		err := readJSONArray(strings.NewReader(c.body), streamLimits{element: 1 << 20, spaceSlack: 1 << 20}, func(i int, m *JSONMetric, _ int64) error {
			if i > 0 && m.Type != "" && m.Name == "b" {
				t.Errorf("%q: element %d kept the type of the one before: %+v", c.body, i, m)
			}
			names = append(names, m.Name)
			return nil
		})
		if len(names) != c.n || (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%q: %d elements, %v; want %d, %q", c.body, len(names), err, c.n, c.err)
		}
	}
}

// The sizes of the elements add up to the body, squeezed, but for its
// brackets; an error of each stops the reading there, and is returned.
func TestReadJSONArraySizesAndStop(t *testing.T) {
	elems := []string{`{"name":"a"}`, `{"name":"bb","tags":["x"]}`, `{}`, `{"name":"c"}`}
	body := "[" + strings.Join(elems, " ,\n  ") + "  ]"
	var sizes []int64
	stop := errors.New("stop")
	err := readJSONArray(strings.NewReader(body), streamLimits{element: 1 << 10, spaceSlack: 1 << 10}, func(i int, _ *JSONMetric, size int64) error {
		sizes = append(sizes, size)
		return nil
	})
	want := []int64{int64(len(elems[0])), int64(len(elems[1]) + 3), int64(len(elems[2]) + 3), int64(len(elems[3]) + 3)}
	if err != nil || !reflect.DeepEqual(sizes, want) {
		t.Errorf("sizes %v, %v; want %v", sizes, err, want)
	}
	n := 0
	err = readJSONArray(strings.NewReader(body), streamLimits{element: 1 << 10, spaceSlack: 1 << 10}, func(i int, _ *JSONMetric, _ int64) error {
		n++
		if i == 1 {
			return stop
		}
		return nil
	})
	if err != stop || n != 2 {
		t.Errorf("%d elements read, %v; want 2, stop", n, err)
	}
}

// A body that is not one array of metrics, or is more, is refused with 400
// and nothing of it is merged, even its elements that decoded.
func TestImportTrailingData(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	good := string(counterBody(t, "ok", 1))
	for _, body := range []string{good + "]", good + "}", good + " []", good + "x", good + `{"name":"c"}`, good + " 1", good[:len(good)-1] + ",", good[:len(good)-1] + " x]"} {
		for _, enc := range []string{"", "deflate"} {
			b := []byte(body)
			if enc == "deflate" {
				b = deflate(b)
			}
			rec := postImport(t, im, enc, b)
			if rec.Code != http.StatusBadRequest || m.numCalls() != 0 {
				t.Errorf("%q (%q): %d %q, %d merges", body, enc, rec.Code, rec.Body.String(), m.numCalls())
			}
		}
	}
	if rec := postImport(t, im, "", []byte(good+" \n")); rec.Code != http.StatusAccepted {
		t.Errorf("whitespace after the array: %d %q", rec.Code, rec.Body.String())
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:json"); n != 16 {
		t.Errorf("import.request_error_total cause:json = %d, want 16", n)
	}
	// The metrics of refused bodies are not counted either.
	if n := stats.Sum("import.metric_error_total"); n != 0 {
		t.Errorf("import.metric_error_total = %d, want 0", n)
	}
}

// An element over the cap refuses the body with 413: nothing is merged,
// not even the elements before it, nor are their errors counted.
func TestImportElementTooLarge(t *testing.T) {
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	if im.maxElement != 16<<20 {
		t.Fatalf("element cap %d, want 16 MiB", im.maxElement)
	}
	im.maxElement = 1 << 10
	fits := encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: strings.Repeat("a", 900), Counter: 1})
	bad := JSONMetric{Name: "", Type: "counter", Value: make([]byte, 8)}
	over := encode(t, samplers.Forwarded{Type: samplers.CounterMetric, Name: strings.Repeat("b", 1100), Counter: 1})
	for _, enc := range []string{"", "deflate", "gzip"} {
		body := marshal(t, []JSONMetric{fits, bad, fits, over, fits})
		switch enc {
		case "deflate":
			body = deflate(body)
		case "gzip":
			body = gzipped(body)
		}
		rec := postImport(t, im, enc, body)
		if rec.Code != http.StatusRequestEntityTooLarge || rec.Body.String() != "a metric, with the separator before it, is over 1024 bytes\n" {
			t.Errorf("%q: %d %q", enc, rec.Code, rec.Body.String())
		}
	}
	if n := m.numCalls(); n != 0 {
		t.Errorf("%d merges, want none", n)
	}
	if rec := postImport(t, im, "", marshal(t, []JSONMetric{fits, bad, fits})); rec.Code != http.StatusAccepted {
		t.Errorf("elements within the cap: %d %q", rec.Code, rec.Body.String())
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:too_large"); n != 3 {
		t.Errorf("import.request_error_total cause:too_large = %d, want 3", n)
	}
	if n := stats.Sum("import.metric_error_total", "cause:name"); n != 1 {
		t.Errorf("import.metric_error_total cause:name = %d, want 1 (the body merged)", n)
	}
}

// A compressed body is capped as sent too: a deflate stream of empty
// blocks, which decompresses to "[]", is cut at the compressed cap.
func TestImportCompressedCap(t *testing.T) {
	const maxBody = 1 << 10
	var buf bytes.Buffer
	zw := zlib.NewWriter(&buf)
	zw.Write([]byte("["))
	for buf.Len() <= int(compressedCap(maxBody)) {
		zw.Flush() // an empty stored block
	}
	zw.Write([]byte("]"))
	zw.Close()
	m := &fakeMerger{}
	// Without the cap on the compressed body, it is an empty import.
	im := NewImporter(m, ImporterConfig{MaxBodyBytes: int64(buf.Len())})
	if rec := postImport(t, im, "deflate", buf.Bytes()); rec.Code != http.StatusAccepted {
		t.Fatalf("under a larger cap: %d %q", rec.Code, rec.Body.String())
	}
	im = NewImporter(m, ImporterConfig{MaxBodyBytes: maxBody})
	rec := postImport(t, im, "deflate", buf.Bytes())
	if want := "body over 66564 bytes as sent; send fewer metrics per request or raise import_max_body_bytes\n"; rec.Code != http.StatusRequestEntityTooLarge || rec.Body.String() != want {
		t.Errorf("%d %q, want 413 %q", rec.Code, rec.Body.String(), want)
	}
	if n := m.numCalls(); n != 1 {
		t.Errorf("%d merges, want 1", n)
	}
}

func TestCompressedCap(t *testing.T) {
	for in, want := range map[int64]int64{
		0:             64 << 10,
		256 << 20:     256<<20 + 1<<20 + 64<<10,
		1<<63 - 1:     1<<63 - 1,
		1<<63 - 1<<16: 1<<63 - 1,
	} {
		if got := compressedCap(in); got != want {
			t.Errorf("compressedCap(%d) = %d, want %d", in, got, want)
		}
	}
}
