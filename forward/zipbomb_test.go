package forward

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/adler32"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zlib"

	"github.com/veneur/veneur/internal/statstest"
)

// bomb is a zlib stream (what Content-Encoding: deflate carries) of prefix,
// then mib MiB of the byte fill, then suffix, built without holding what
// it decompresses to: it deflates one MiB of fill by reference to the fill
// before it, and repeats those bytes. A GiB of whitespace takes about a
// MiB.
func bomb(t testing.TB, prefix string, fill byte, mib int, suffix string) []byte {
	t.Helper()
	if mib < 2 {
		t.Fatalf("a bomb of %d MiB: at least 2", mib)
	}
	var buf bytes.Buffer
	buf.Write([]byte{0x78, 0xda}) // zlib: deflate, 32 KiB window, best compression
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{fill}, 1<<20)
	fw.Write([]byte(prefix))
	fw.Write(chunk)
	fw.Flush() // ends on a byte, so that what follows can be repeated
	start := buf.Len()
	fw.Write(chunk)
	fw.Flush()
	// The window holds fill before and after each copy: every copy
	// decompresses to the same MiB.
	seg := bytes.Clone(buf.Bytes()[start:])
	for range mib - 2 {
		buf.Write(seg)
	}
	fw.Write([]byte(suffix))
	fw.Close()
	sum := adler32Fill(adler32.Checksum([]byte(prefix)), fill, int64(mib)<<20)
	sum = adler32Append(sum, []byte(suffix))
	return binary.BigEndian.AppendUint32(buf.Bytes(), sum)
}

// adler32Fill is the Adler-32 of the data summed in sum, then n bytes of c,
// computed without them: each byte adds c to a, and a to b.
func adler32Fill(sum uint32, c byte, n int64) uint32 {
	const mod = 65521
	a, b := uint64(sum&0xffff), uint64(sum>>16)
	m := uint64(n)
	// b gains n×a and c×(1+2+…+n); a gains n×c.
	tri := (m % (2 * mod)) * ((m + 1) % (2 * mod)) / 2 % mod // n(n+1)/2 mod 65521: one of n, n+1 is even
	b = (b + (m%mod)*a + uint64(c)*tri) % mod
	a = (a + (m%mod)*uint64(c)) % mod
	return uint32(b<<16 | a)
}

// adler32Append is the Adler-32 of the data summed in sum, then p.
func adler32Append(sum uint32, p []byte) uint32 {
	for _, c := range p {
		sum = adler32Fill(sum, c, 1)
	}
	return sum
}

// The bomb is what it says: a valid zlib stream of exactly its prefix,
// fill and suffix (a small one is checked byte for byte).
func TestBombIsValid(t *testing.T) {
	for _, fill := range []byte{' ', '1'} {
		b := bomb(t, `[{"a":`, fill, 3, `}]`)
		zr, err := zlib.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%q: %v", fill, err)
		}
		want := `[{"a":` + strings.Repeat(string(fill), 3<<20) + `}]`
		if string(got) != want {
			t.Errorf("%q: decompressed %d bytes, not the %d of the bomb", fill, len(got), len(want))
		}
	}
	if got, want := adler32Fill(1, 'x', 100000), adler32.Checksum(bytes.Repeat([]byte{'x'}, 100000)); got != want {
		t.Errorf("adler32Fill %#x, want %#x", got, want)
	}
}

// rssKiB is the current (VmRSS) and peak (VmHWM) resident memory of this
// process, in KiB, or zeros where /proc says nothing.
func rssKiB() (cur, peak int64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v int64
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			if _, err := fmt.Sscan(line[len("VmRSS:"):], &v); err == nil {
				cur = v
			}
		case strings.HasPrefix(line, "VmHWM:"):
			if _, err := fmt.Sscan(line[len("VmHWM:"):], &v); err == nil {
				peak = v
			}
		}
	}
	return cur, peak
}

// resetPeakRSS returns freed memory to the system and sets the peak (VmHWM)
// to the current resident memory, so that what follows is measured alone.
// It reports whether the kernel allowed it.
func resetPeakRSS() bool {
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// rssEnv names the environment variable that makes the tests that
// measure the peak resident memory assert on it too: set it, and run one
// such test per process without the race detector, e.g.
//
//	VENEUR_ASSERT_RSS=1 go test ./forward/ -run '^TestImportLargeAtOnce$' -v
const rssEnv = "VENEUR_ASSERT_RSS"

// measureRSS logs the peak resident memory of this process while f ran
// (VmHWM, from /proc/self/status), against the memory before. It is a
// figure to read: it depends on the machine, the race detector and what
// ran before in the process. With rssEnv set, a peak over maxMiB fails t
// (with the race detector, or where VmHWM cannot be read or reset, it is
// logged only).
func measureRSS(t *testing.T, what string, maxMiB int64, f func()) {
	t.Helper()
	reset := resetPeakRSS()
	before, _ := rssKiB()
	f()
	_, peak := rssKiB()
	if peak == 0 {
		t.Logf("%s: no /proc/self/status to measure memory", what)
		return
	}
	note := ""
	if !reset {
		note = " (VmHWM not reset: the peak may be of an earlier test)"
	}
	t.Logf("%s: peak RSS (VmHWM) %d MiB, from %d MiB before%s; at most %d MiB", what, peak>>10, before>>10, note, maxMiB)
	if os.Getenv(rssEnv) != "" && reset && !raceDetector && peak>>10 > maxMiB {
		t.Errorf("%s: peak RSS %d MiB, over %d MiB", what, peak>>10, maxMiB)
	}
}

// Bombs of a GiB (a MiB compressed) are refused: with 400 (cause
// whitespace) after reading 64 KiB of those of whitespace, wherever it
// is, and with 413 after reading at most the element cap of the others;
// nothing of them is merged. The peak memory of each is logged.
func TestImportZipBomb(t *testing.T) {
	good := `{"name":"ok","type":"counter","tags":[],"value":"AAAAAAAA8D8="}`
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	const space, tooLarge = http.StatusBadRequest, http.StatusRequestEntityTooLarge
	for _, c := range []struct {
		name, prefix string
		fill         byte
		suffix       string
		code         int
	}{
		// Each is valid JSON, or only refused once read whole, without
		// the limits.
		{"whitespace in the array", "[", ' ', "]", space},
		{"whitespace before the array", "", ' ', "[]", space},
		{"whitespace after the array", "[" + good + "]", ' ', "", space},
		{"whitespace between metrics", "[" + good + ",", '\n', good + "]", space},
		{"whitespace in a metric", `[{"name":"ok",`, '\t', `"type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`, space},
		{"a number before the array", "", '1', "", tooLarge},
		{"a string in the array", `["`, 'x', `"]`, tooLarge},
		{"a name", `[{"name":"`, 'x', `","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`, tooLarge},
	} {
		body := bomb(t, c.prefix, c.fill, 1<<10, c.suffix)
		measureRSS(t, c.name+", a GiB in "+byteSize(len(body)), 100, func() {
			rec := postImport(t, im, "deflate", body)
			if rec.Code != c.code {
				t.Errorf("%s: %d %q, want %d", c.name, rec.Code, short(rec.Body.String()), c.code)
			}
		})
	}
	if n := m.numCalls(); n != 0 {
		t.Errorf("%d merges of bombs", n)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	for cause, want := range map[string]int64{"whitespace": 5, "too_large": 3} {
		if n := stats.Sum("import.request_error_total", "cause:"+cause); n != want {
			t.Errorf("import.request_error_total cause:%s = %d, want %d", cause, n, want)
		}
	}
}

// countingReader is an endless stream of its byte, counting what it gave.
type countingReader struct {
	b byte
	n int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.b
	}
	r.n += int64(len(p))
	return len(p), nil
}

// Whitespace without end, anywhere, is refused as mostly whitespace once
// the slack is read, and a little more (what the decoder asks for at
// once); a string without end once the element cap is.
func TestImportBombReadsLittle(t *testing.T) {
	lim := streamLimits{element: maxImportElement, spaceSlack: whitespaceSlack}
	const readAhead = 64 << 10
	for _, c := range []struct {
		name, prefix string
		fill         byte
		max          int64
	}{
		{"whitespace", "", ' ', whitespaceSlack + readAhead},
		{"whitespace in the array", "[", '\n', whitespaceSlack + readAhead},
		{"whitespace in a metric", `[{"name":"a","type":"counter",`, '\t', whitespaceSlack + readAhead},
		{"a string", `["`, 'x', maxImportElement + readAhead},
	} {
		fill := &countingReader{b: c.fill}
		err := readJSONArray(io.MultiReader(strings.NewReader(c.prefix), fill), lim, func(int, *JSONMetric, int64) error { return nil })
		var ws *whitespaceError
		var tl *tooLargeError
		if !errors.As(err, &ws) && !errors.As(err, &tl) {
			t.Errorf("%s: %v", c.name, err)
		}
		if fill.n > c.max {
			t.Errorf("%s: %d bytes read before the refusal, want at most %d", c.name, fill.n, c.max)
		}
	}
}

// Twenty bombs at once over HTTP, past the concurrency limit, all get
// their 4xx: those that find no place wait for one, and bombs of
// whitespace are refused fast. With one place only, they all wait their
// turn. Bombs of one long string, which the decoder reads up to the
// element cap (some 0.5 s each), may still find no place within the wait
// when 20 come at once: those get 503 with Retry-After. Every refusal is
// counted, and nothing merged. The peak memory is logged (asserted under
// rssEnv: under 300 MiB).
func TestImportZipBombsAtOnce(t *testing.T) {
	whitespace := bomb(t, "[", ' ', 1<<10, "]")
	for _, c := range []struct {
		name   string
		body   []byte
		places int // 0 for the default
		code   int
		cause  string
		busyOK bool
	}{
		{"whitespace", whitespace, 0, http.StatusBadRequest, "whitespace", false},
		{"whitespace, one place", whitespace, 1, http.StatusBadRequest, "whitespace", false},
		{"a long string", bomb(t, `["`, 'x', 1<<10, `"]`), 0, http.StatusRequestEntityTooLarge, "too_large", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := ImporterConfig{MaxConcurrency: c.places}
			if c.places == 1 {
				// All 20 wait their turn, however slow the machine.
				cfg.MaxWaiting, cfg.MaxWait = 20, time.Minute
			}
			im := NewImporter(&fakeMerger{}, cfg)
			bombsAtOnce(t, c.name, im, c.body, c.code, c.cause, c.busyOK)
		})
	}
}

func bombsAtOnce(t *testing.T, what string, im *Importer, body []byte, wantCode int, wantCause string, busyOK bool) {
	const n = 20
	srv := httptest.NewServer(im)
	defer srv.Close()

	codes := make([]int, n)
	retryAfter := make([]string, n)
	measureRSS(t, fmt.Sprintf("%d bombs of %s at once, each a GiB in %s", n, what, byteSize(len(body))), 300, func() {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/import", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				req.Header.Set("Content-Encoding", "deflate")
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Errorf("bomb %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[i], retryAfter[i] = resp.StatusCode, resp.Header.Get("Retry-After")
			})
		}
		wg.Wait()
	})
	var busy int64
	for i, code := range codes {
		if code == http.StatusServiceUnavailable && retryAfter[i] == "1" {
			busy++
		}
		if code != wantCode && (!busyOK || code != http.StatusServiceUnavailable || retryAfter[i] != "1") {
			t.Errorf("bomb %d: %d (Retry-After %q), want %d", i, code, retryAfter[i], wantCode)
		}
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	t.Logf("%d places; %d requests waited for one, %d got none", cap(im.slots), stats.Sum("import.waited_total"), busy)
	if calls := im.merger.(*fakeMerger).numCalls(); calls != 0 {
		t.Errorf("%d merges of bombs", calls)
	}
	if got, want := stats.Sum("import.request_error_total", "cause:"+wantCause), n-busy; got != want {
		t.Errorf("import.request_error_total cause:%s = %d, want %d", wantCause, got, want)
	}
	if got := stats.Sum("import.request_error_total", "cause:busy"); got != busy {
		t.Errorf("import.request_error_total cause:busy = %d, want %d", got, busy)
	}
	if total := stats.Sum("import.request_error_total"); total != n {
		t.Errorf("import.request_error_total = %d, want %d", total, n)
	}
}

// byteSize is n bytes, in KiB or MiB.
func byteSize(n int) string {
	if n >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// short is s, cut to 200 bytes: an answer may quote a gigabyte of a bomb.
func short(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
