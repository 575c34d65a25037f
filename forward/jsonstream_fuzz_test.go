package forward

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// Limits of FuzzImportStream: small, so that the fuzzer meets them.
const (
	fuzzMaxBody    = 4 << 10
	fuzzMaxElement = 512
	fuzzSpaceSlack = 64
	fuzzPartBytes  = 256
)

// FuzzImportStream checks the streaming import against decoding the body
// with a plain json.Decoder, as encoding/json does: under the limits, the
// import merges a body exactly when json.Unmarshal takes it as an array
// of JSONMetric, and then the same metrics, in order, in parts of about
// fuzzPartBytes. A body refused merges at most the first parts of what
// the plain decoder reads of it before its error (and the answer says
// so). A body is refused as too large only when it is longer than the
// element cap, and as mostly whitespace only when it has more than the
// slack of whitespace. Its corpus (testdata/fuzz/FuzzImportStream) has
// whitespace bombs, indented bodies, nested arrays, long strings, bodies
// of several parts and bodies cut short.
func FuzzImportStream(f *testing.F) {
	f.Add([]byte(`[{"name":"a","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`), false)
	f.Add([]byte(`[{"name":"a","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`), true)
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{MaxBodyBytes: fuzzMaxBody})
	im.maxElement = fuzzMaxElement
	im.spaceSlack = fuzzSpaceSlack
	im.partBytes = fuzzPartBytes
	f.Fuzz(func(t *testing.T, body []byte, deflated bool) {
		sent, enc := body, ""
		if deflated {
			sent, enc = deflate(body), "deflate"
		}
		rec := postImport(t, im, enc, sent)
		m.mu.Lock()
		calls := m.calls
		m.calls = nil // fuzzing runs for long: keep no history
		m.mu.Unlock()
		var merged []string
		for _, c := range calls {
			for _, f := range c {
				merged = append(merged, f.Name)
			}
		}

		var want []JSONMetric
		isArray := json.Unmarshal(body, &want) == nil && want != nil // null is no array
		switch rec.Code {
		case http.StatusRequestEntityTooLarge:
			if len(body) <= fuzzMaxElement {
				t.Fatalf("%d bytes refused as too large: %s", len(body), rec.Body.String())
			}
			checkRefusedMerges(t, body, merged, rec)
			return
		case http.StatusAccepted, http.StatusBadRequest:
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
		if strings.HasPrefix(rec.Body.String(), "body is mostly whitespace") {
			if n := countSpace(body); rec.Code != http.StatusBadRequest || n <= fuzzSpaceSlack {
				t.Fatalf("%q, with %d bytes of whitespace, refused as mostly whitespace: %d %s", body, n, rec.Code, rec.Body.String())
			}
			checkRefusedMerges(t, body, merged, rec)
			return
		}
		if !isArray {
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("%q is not an array of metrics, yet status %d: %s", body, rec.Code, rec.Body.String())
			}
			checkRefusedMerges(t, body, merged, rec)
			return
		}
		if len(body) <= fuzzPartBytes && len(calls) != 1 {
			t.Fatalf("%q is an array of %d metrics, in one part, yet %d merges, status %d: %s", body, len(want), len(calls), rec.Code, rec.Body.String())
		}
		var resp importResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
		accepted := acceptedNames(want)
		if resp.Accepted != len(merged) || resp.Accepted+resp.Rejected != len(want) || !slices.Equal(merged, accepted) {
			t.Fatalf("answer %+v, merged %q; want %q of %d", resp, merged, accepted, len(want))
		}
		wantCode := http.StatusAccepted
		if len(accepted) == 0 && len(want) > 0 {
			wantCode = http.StatusBadRequest // none of its metrics accepted
		}
		if rec.Code != wantCode {
			t.Fatalf("status %d, want %d", rec.Code, wantCode)
		}
	})
}

// acceptedNames are the names of the metrics of ms that DecodeJSON takes.
func acceptedNames(ms []JSONMetric) []string {
	var names []string
	for i := range ms {
		if f, err := DecodeJSON(&ms[i]); err == nil {
			names = append(names, f.Name)
		}
	}
	return names
}

// checkRefusedMerges fails t unless what was merged of a refused body is
// nothing, or a start of the metrics accepted among the elements that a
// plain json.Decoder reads of it, and the answer rec says how many; a
// body of one part merges nothing.
func checkRefusedMerges(t *testing.T, body []byte, merged []string, rec *httptest.ResponseRecorder) {
	t.Helper()
	if len(merged) == 0 {
		if strings.Contains(rec.Body.String(), "were merged") {
			t.Fatalf("nothing merged, yet %q", rec.Body.String())
		}
		return
	}
	if len(body) <= fuzzPartBytes {
		t.Fatalf("%q, of one part, refused (%d %s), yet %q merged", body, rec.Code, rec.Body.String(), merged)
	}
	var read []JSONMetric
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err == nil && tok == json.Delim('[') {
		for dec.More() {
			var m JSONMetric
			if dec.Decode(&m) != nil {
				break
			}
			read = append(read, m)
		}
	}
	accepted := acceptedNames(read)
	if len(merged) > len(accepted) || !slices.Equal(merged, accepted[:len(merged)]) {
		t.Fatalf("%q refused (%d %s), yet %q merged; want a start of %q", body, rec.Code, rec.Body.String(), merged, accepted)
	}
	if !strings.Contains(rec.Body.String(), fmt.Sprintf("%d of them accepted", len(merged))) {
		t.Fatalf("%q merged, answered %q", merged, rec.Body.String())
	}
}

// countSpace is the count of JSON whitespace bytes in b, strings
// included.
func countSpace(b []byte) int {
	n := 0
	for _, c := range b {
		if isSpace(c) {
			n++
		}
	}
	return n
}

// FuzzSpaceSqueezer checks that squeezing whitespace leaves JSON the same
// (valid or not, and of the same value), whatever pieces it is read in,
// and that the whitespace allowance refuses only what has more
// whitespace than its slack.
func FuzzSpaceSqueezer(f *testing.F) {
	for _, s := range []string{
		`[1 2]`, "[ \t\r\n1 ,\n\n 2 ]\n", `{ "a  b" :  "x\"  y" , "c\\"  :  "\\\"  " }`,
		`"\\"   "`, `["\u0020  \\\\  \"  "]`, "[\"a\tb\"]", `[tr  ue]`, "        [ ]        x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, err := io.ReadAll(&spaceSqueezer{r: bytes.NewReader(in), slack: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		bytewise, err := io.ReadAll(&spaceSqueezer{r: iotest.OneByteReader(bytes.NewReader(in)), slack: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(whole, bytewise) {
			t.Fatalf("%q squeezes to %q whole, %q a byte at a time", in, whole, bytewise)
		}
		if bytes.Contains(whole, []byte("  ")) && !bytes.Contains(whole, []byte(`"`)) {
			t.Fatalf("%q squeezes to %q, with a run of spaces", in, whole)
		}
		checkSameJSON(t, in, whole)
		// With a small slack, a refusal is of an input with more
		// whitespace than it, after a start of the same output; without
		// one, the output is the same.
		const slack = 8
		limited, err := io.ReadAll(&spaceSqueezer{r: bytes.NewReader(in), slack: slack})
		var ws *whitespaceError
		switch {
		case errors.As(err, &ws):
			if countSpace(in) <= slack || !bytes.HasPrefix(whole, limited) {
				t.Fatalf("%q, with %d bytes of whitespace, refused after %q: %v", in, countSpace(in), limited, err)
			}
		case err != nil || !bytes.Equal(limited, whole):
			t.Fatalf("%q squeezes to %q, %v with a slack of %d; %q without", in, limited, err, slack, whole)
		}
	})
}

// TestWriteImportStreamFuzzCorpus adds to the committed seed corpus of
// FuzzImportStream the bodies that meet the whitespace allowance and the
// parts: whitespace bombs, indented bodies, bodies of several parts, and
// such bodies refused after some parts.
func TestWriteImportStreamFuzzCorpus(t *testing.T) {
	if os.Getenv("FORWARD_WRITE_CORPUS") == "" {
		t.Skip("set FORWARD_WRITE_CORPUS=1 to add the seeds of the whitespace allowance and the parts to testdata/fuzz/FuzzImportStream")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzImportStream")
	write := func(name string, body []byte, deflated bool) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nbool(%v)\n", body, deflated)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	counters := func(n int) []JSONMetric {
		ms := make([]JSONMetric, n)
		for i := range ms {
			ms[i] = JSONMetric{Name: fmt.Sprint("c", i), Type: "counter", Tags: []string{}, Value: counterBytes(float64(i))}
		}
		ms[n/2].Type = "gauge" // one rejected
		return ms
	}
	parts := marshal(t, counters(8)) // some 3 parts
	indented, err := json.MarshalIndent(counters(3), "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{
		"array":          []byte("[" + strings.Repeat(" ", 200) + "]"),
		"before":         []byte(strings.Repeat("\n", 200) + "[]"),
		"in-metric":      []byte(`[{"name":"a",` + strings.Repeat("\t", 200) + `"type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`),
		"in-string":      []byte(`[{"name":"` + strings.Repeat(" ", 200) + `","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`),
		"indented":       indented,
		"parts":          parts,
		"parts-cut":      parts[:len(parts)-20],
		"parts-bad-tail": append(slices.Clone(parts[:len(parts)-1]), `,1]`...),
		"parts-space":    append(slices.Clone(parts[:len(parts)-1]), strings.Repeat(" ", fuzzSpaceSlack+4*len(parts)+100)+"]"...),
		"parts-trailing": append(slices.Clone(parts), ` []`...),
	}
	// Named apart from the seeds written before: space-* and parts-*.
	for name, body := range seeds {
		if !strings.HasPrefix(name, "parts") {
			name = "space-" + name
		}
		write(name, body, false)
		write(name+"-deflated", body, true)
	}
}
