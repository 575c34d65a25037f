package forward

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"testing/iotest"
)

// Limits of FuzzImportStream: small, so that the fuzzer meets them.
const (
	fuzzMaxBody    = 4 << 10
	fuzzMaxElement = 512
)

// FuzzImportStream checks the streaming import against decoding the whole
// body at once, as encoding/json does: under the limits, the import
// merges a body exactly when json.Unmarshal takes it as an array of
// JSONMetric, and then the same metrics, in order. A body is refused as
// too large only when it is longer than the element cap, and then nothing
// of it is merged. Its corpus (testdata/fuzz/FuzzImportStream) has
// whitespace bombs, nested arrays, long strings and bodies cut short.
func FuzzImportStream(f *testing.F) {
	f.Add([]byte(`[{"name":"a","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`), false)
	f.Add([]byte(`[{"name":"a","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`), true)
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{MaxBodyBytes: fuzzMaxBody})
	im.maxElement = fuzzMaxElement
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

		var want []JSONMetric
		isArray := json.Unmarshal(body, &want) == nil && want != nil // null is no array
		switch rec.Code {
		case http.StatusRequestEntityTooLarge:
			if len(body) <= fuzzMaxElement {
				t.Fatalf("%d bytes refused as too large: %s", len(body), rec.Body.String())
			}
			if len(calls) != 0 {
				t.Fatalf("refused as too large, and merged")
			}
			return
		case http.StatusAccepted, http.StatusBadRequest:
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.String())
		}
		if !isArray {
			if len(calls) != 0 || rec.Code != http.StatusBadRequest {
				t.Fatalf("%q is not an array of metrics, yet %d merges, status %d: %s", body, len(calls), rec.Code, rec.Body.String())
			}
			return
		}
		if len(calls) != 1 {
			t.Fatalf("%q is an array of %d metrics, yet %d merges, status %d: %s", body, len(want), len(calls), rec.Code, rec.Body.String())
		}
		var resp importResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("answer %q: %v", rec.Body.String(), err)
		}
		merged := calls[0]
		var accepted []string
		for i := range want {
			if f, err := DecodeJSON(&want[i]); err == nil {
				accepted = append(accepted, f.Name)
			}
		}
		if resp.Accepted != len(merged) || resp.Accepted+resp.Rejected != len(want) || len(merged) != len(accepted) {
			t.Fatalf("answer %+v, %d merged; want %d of %d", resp, len(merged), len(accepted), len(want))
		}
		for i := range merged {
			if merged[i].Name != accepted[i] {
				t.Fatalf("merged %d is %q, want %q", i, merged[i].Name, accepted[i])
			}
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

// FuzzSpaceSqueezer checks that squeezing whitespace leaves JSON the same
// (valid or not, and of the same value), whatever pieces it is read in.
func FuzzSpaceSqueezer(f *testing.F) {
	for _, s := range []string{
		`[1 2]`, "[ \t\r\n1 ,\n\n 2 ]\n", `{ "a  b" :  "x\"  y" , "c\\"  :  "\\\"  " }`,
		`"\\"   "`, `["\u0020  \\\\  \"  "]`, "[\"a\tb\"]", `[tr  ue]`, "        [ ]        x",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		whole, err := io.ReadAll(&spaceSqueezer{r: bytes.NewReader(in), maxRun: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		bytewise, err := io.ReadAll(&spaceSqueezer{r: iotest.OneByteReader(bytes.NewReader(in)), maxRun: 1 << 20})
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
	})
}
