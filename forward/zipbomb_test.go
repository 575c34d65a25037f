package forward

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
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

// measureRSS logs the peak resident memory of this process while f ran
// (VmHWM, from /proc/self/status), against the memory before. It is a
// figure to read, not to assert on: it depends on the machine and the
// race detector.
func measureRSS(t *testing.T, what string, f func()) {
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
	t.Logf("%s: peak RSS (VmHWM) %d MiB, from %d MiB before%s", what, peak>>10, before>>10, note)
}

// Bombs of a GiB (a MiB compressed) are refused with 413 after reading at
// most the element cap of each, whatever the bytes and wherever they are,
// and nothing of them is merged. The peak memory of each is logged.
func TestImportZipBomb(t *testing.T) {
	good := `{"name":"ok","type":"counter","tags":[],"value":"AAAAAAAA8D8="}`
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	for _, c := range []struct {
		name, prefix string
		fill         byte
		suffix       string
	}{
		// Each is valid JSON, or only refused once read whole, without
		// the limits.
		{"whitespace in the array", "[", ' ', "]"},
		{"whitespace before the array", "", ' ', "[]"},
		{"whitespace after the array", "[" + good + "]", ' ', ""},
		{"whitespace between metrics", "[" + good + ",", '\n', good + "]"},
		{"whitespace in a metric", `[{"name":"ok",`, '\t', `"type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`},
		{"a number before the array", "", '1', ""},
		{"a string in the array", `["`, 'x', `"]`},
		{"a name", `[{"name":"`, 'x', `","type":"counter","tags":[],"value":"AAAAAAAA8D8="}]`},
	} {
		body := bomb(t, c.prefix, c.fill, 1<<10, c.suffix)
		measureRSS(t, c.name+", a GiB in "+byteSize(len(body)), func() {
			rec := postImport(t, im, "deflate", body)
			if rec.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("%s: %d %q, want 413", c.name, rec.Code, short(rec.Body.String()))
			}
		})
	}
	if n := m.numCalls(); n != 0 {
		t.Errorf("%d merges of bombs", n)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	if n := stats.Sum("import.request_error_total", "cause:too_large"); n != 8 {
		t.Errorf("import.request_error_total cause:too_large = %d, want 8", n)
	}
}

// Twenty bombs at once over HTTP are each refused, with 413 or, past the
// concurrency limit, 503 busy; every refusal is counted. The peak memory
// is logged, for bombs of whitespace and for bombs of one long string,
// which the decoder holds up to the element cap.
func TestImportZipBombsAtOnce(t *testing.T) {
	for _, c := range []struct {
		name, prefix string
		fill         byte
		suffix       string
	}{
		{"whitespace", "[", ' ', "]"},
		{"a long string", `["`, 'x', `"]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			bombsAtOnce(t, c.name, bomb(t, c.prefix, c.fill, 1<<10, c.suffix))
		})
	}
}

func bombsAtOnce(t *testing.T, what string, body []byte) {
	const n = 20
	m := &fakeMerger{}
	im := NewImporter(m, ImporterConfig{})
	srv := httptest.NewServer(im)
	defer srv.Close()

	codes := make([]int, n)
	measureRSS(t, fmt.Sprintf("%d bombs of %s at once, each a GiB in %s", n, what, byteSize(len(body))), func() {
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
					// The server may close the connection on a refusal
					// before it has read the whole body.
					t.Logf("bomb %d: %v", i, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
	})
	var tooLarge, busy int64
	for i, code := range codes {
		switch code {
		case http.StatusRequestEntityTooLarge:
			tooLarge++
		case http.StatusServiceUnavailable:
			busy++
		case 0: // no answer read; counted below all the same
		default:
			t.Errorf("bomb %d: %d, want 413 or 503", i, code)
		}
	}
	t.Logf("%d refused as too large, %d as busy (at most %d at once)", tooLarge, busy, cap(im.slots))
	if n := m.numCalls(); n != 0 {
		t.Errorf("%d merges of bombs", n)
	}
	stats := &statstest.Recorder{}
	im.Report(stats)
	gotTooLarge, gotBusy := stats.Sum("import.request_error_total", "cause:too_large"), stats.Sum("import.request_error_total", "cause:busy")
	if gotTooLarge < tooLarge || gotBusy < busy || gotTooLarge+gotBusy != n {
		t.Errorf("counted %d too_large, %d busy; answered %d and %d of %d", gotTooLarge, gotBusy, tooLarge, busy, n)
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
