package main

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

const sampleBody = `{"series":[
 {"metric":"lg.c.1","points":[[1700000000,0.7]],"tags":["env:load"],"host":"h","type":"rate","interval":10},
 {"metric":"lg.c.2","points":[[1700000000,1.5]],"tags":[],"host":"h","type":"rate","interval":2},
 {"metric":"lg.c.3","points":[[1700000000,3]],"host":"h","device_name":"d","type":"rate","interval":1},
 {"metric":"lg.h.1.count","points":[[1700000000,5]],"host":"h","type":"rate","interval":1},
 {"metric":"lg.g.1","points":[[1700000000,12.5]],"host":"h","type":"gauge"},
 {"metric":"veneur.packet.error_total","points":[[1700000000,1]],"host":"h","type":"rate","interval":1}
]}`

func TestDecodeSeries(t *testing.T) {
	s, err := decodeSeries(strings.NewReader(sampleBody))
	if err != nil {
		t.Fatal(err)
	}
	// 0.7*10 + 1.5*2 + 3*1: histogram counts and foreign metrics excluded.
	want := postSummary{series: 5, counterSeries: 3, counterSum: 13, stamp: 1700000000}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
}

func TestDecodeSeriesHostile(t *testing.T) {
	tests := []struct {
		name, body string
		want       postSummary
		wantErr    bool
	}{
		{name: "counter as gauge", body: `{"series":[{"metric":"lg.c.1","points":[[1,2]],"type":"gauge"}]}`,
			want: postSummary{series: 1, counterSeries: 1, badCounters: 1, stamp: 1}},
		{name: "counter without interval", body: `{"series":[{"metric":"lg.c.1","points":[[1,2]],"type":"rate"}]}`,
			want: postSummary{series: 1, counterSeries: 1, badCounters: 1, stamp: 1}},
		{name: "two points", body: `{"series":[{"metric":"lg.c.1","points":[[1,2],[2,2]],"type":"rate","interval":1}]}`,
			want: postSummary{series: 1, counterSeries: 1, badCounters: 1, stamp: 1}},
		{name: "empty", body: `{"series":[]}`},
		{name: "not json", body: `series`, wantErr: true},
		{name: "truncated", body: `{"series":[{"metric":"lg.c.1"`, wantErr: true},
		{name: "wrong point shape", body: `{"series":[{"metric":"lg.c.1","points":[["x",2]],"type":"rate","interval":1}]}`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := decodeSeries(strings.NewReader(tc.body))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if err == nil && s != tc.want {
				t.Fatalf("got %+v, want %+v", s, tc.want)
			}
		})
	}
}

func compressBytes(encoding, body string) []byte {
	var b bytes.Buffer
	switch encoding {
	case "deflate":
		w := zlib.NewWriter(&b)
		w.Write([]byte(body))
		w.Close()
	case "gzip":
		w := gzip.NewWriter(&b)
		w.Write([]byte(body))
		w.Close()
	default:
		b.WriteString(body)
	}
	return b.Bytes()
}

func TestStandInAPI(t *testing.T) {
	tests := []struct {
		name, method, path, encoding string
		body                         []byte
		wantCode                     int
	}{
		{"deflate", http.MethodPost, "/api/v1/series?api_key=k", "deflate", nil, http.StatusAccepted},
		{"gzip", http.MethodPost, "/api/v1/series?api_key=k", "gzip", nil, http.StatusAccepted},
		{"plain", http.MethodPost, "/api/v1/series?api_key=k", "", nil, http.StatusAccepted},
		{"wrong key", http.MethodPost, "/api/v1/series?api_key=x", "deflate", nil, http.StatusForbidden},
		{"wrong path", http.MethodPost, "/api/v1/check_run?api_key=k", "deflate", nil, http.StatusNotFound},
		{"GET", http.MethodGet, "/api/v1/series?api_key=k", "", nil, http.StatusNotFound},
		{"unknown encoding", http.MethodPost, "/api/v1/series?api_key=k", "br", nil, http.StatusUnsupportedMediaType},
		{"deflate header, plain body", http.MethodPost, "/api/v1/series?api_key=k", "deflate", []byte(sampleBody), http.StatusBadRequest},
		{"corrupt json", http.MethodPost, "/api/v1/series?api_key=k", "deflate", compressBytes("deflate", `{"series":[`), http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := newStandInAPI("k")
			body := tc.body
			if body == nil {
				body = compressBytes(tc.encoding, sampleBody)
			}
			req := httptest.NewRequest(tc.method, tc.path, bytes.NewReader(body))
			if tc.encoding != "" {
				req.Header.Set("Content-Encoding", tc.encoding)
			}
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantCode, rec.Body)
			}
			posts, errs := api.snapshot()
			if tc.wantCode == http.StatusAccepted {
				if len(posts) != 1 || posts[0].counterSum != 13 || len(errs) != 0 {
					t.Fatalf("posts %+v errs %v, want one post summing 13", posts, errs)
				}
			} else if len(posts) != 0 || len(errs) != 1 {
				t.Fatalf("posts %+v errs %v, want no post and one error", posts, errs)
			}
			api.reset()
			if posts, errs := api.snapshot(); len(posts) != 0 || len(errs) != 0 {
				t.Fatalf("reset left %v %v", posts, errs)
			}
			if api.inflight.Load() != 0 {
				t.Fatalf("inflight %d after the request", api.inflight.Load())
			}
		})
	}
}

// A body that arrives again (veneur sends it again when its answer came
// too late) is counted once, and the repeat is reported.
func TestStandInAPIRepeats(t *testing.T) {
	api := newStandInAPI("k")
	post := func(body []byte) {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/series?api_key=k", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "deflate")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	body := compressBytes("deflate", sampleBody)
	post(body)
	post(body)
	post(compressBytes("deflate", strings.Replace(sampleBody, "lg.c.1", "lg.c.2", 1)))
	posts, _ := api.snapshot()
	sum := int64(0)
	for _, p := range posts {
		sum += p.counterSum
	}
	if len(posts) != 2 || sum != 26 || api.repeated() != 1 {
		t.Errorf("%d posts summing %d, %d repeats; want 2 posts summing 26, 1 repeat", len(posts), sum, api.repeated())
	}
	api.reset()
	post(body)
	if api.repeated() != 0 {
		t.Error("a body sent in an earlier trial counts as a repeat after reset")
	}
}

// flushes builds posts for flushes at the given offsets (seconds) from t0,
// each split into bodies posted a few milliseconds apart and stamped with
// the 2 s boundary at or before the offset.
func flushes(t0 time.Time, bodies int, series, counters int, offsets ...float64) []postRecord {
	return spreadFlushes(t0, bodies, 3*time.Millisecond, series, counters, offsets...)
}

// spreadFlushes is flushes with the bodies of a flush posted apart apart.
func spreadFlushes(t0 time.Time, bodies int, apart time.Duration, series, counters int, offsets ...float64) []postRecord {
	var posts []postRecord
	for _, off := range offsets {
		stamp := t0.Unix() + 2*int64(off/2)
		for b := range bodies {
			at := t0.Add(time.Duration(off*float64(time.Second)) + time.Duration(b)*apart)
			posts = append(posts, postRecord{arrival: at, postSummary: postSummary{
				series: series / bodies, counterSeries: counters / bodies, counterSum: int64(counters / bodies), stamp: stamp,
			}})
		}
	}
	return posts
}

func TestGroupFlushes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	// The middle flush's bodies arrive over 1.5 s: still one flush.
	groups := groupFlushes(slices.Concat(flushes(t0, 4, 400, 100, 0.5, 4.6), spreadFlushes(t0, 4, 500*time.Millisecond, 400, 100, 2.5)))
	if len(groups) != 3 {
		t.Fatalf("%d groups, want 3: %+v", len(groups), groups)
	}
	for i, g := range groups {
		if g.posts != 4 || g.series != 400 || g.counterSeries != 100 || g.counterSum != 100 {
			t.Errorf("group %d: %+v", i, g)
		}
	}
	if groupFlushes(nil) != nil {
		t.Error("groups from no posts")
	}
}

func TestCheckFlushes(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	interval := 2 * time.Second
	start, end := t0, t0.Add(10*time.Second)
	check := func(posts []postRecord) flushCheck {
		sort.Slice(posts, func(i, j int) bool { return posts[i].arrival.Before(posts[j].arrival) })
		return checkFlushes(posts, start, end, interval, 400, 100, "")
	}
	steady := flushes(t0, 4, 400, 100, 1.8, 3.8, 5.8, 7.8, 9.8)
	// The final flush after SIGTERM, right after the last regular one.
	final := flushes(t0, 2, 200, 50, 10.3)
	tests := []struct {
		name         string
		posts        []postRecord
		wantOK       bool
		wantInterior int
	}{
		{"steady", slices.Concat(steady, final), true, 3},
		// The first flush is stamped when sending began: its interval
		// lay before, and it is not judged.
		{"partial first", flushes(t0, 1, 40, 10, 0.3, 2.3, 4.3, 6.3, 8.3), false, 4},
		{"partial first only", slices.Concat(flushes(t0, 1, 40, 10, 0.3), flushes(t0, 4, 400, 100, 2.3, 4.3, 6.3, 8.3)), true, 4},
		// Bodies of one flush arriving over 1.2 s are one flush.
		{"slow flushes", slices.Concat(spreadFlushes(t0, 4, 400*time.Millisecond, 400, 100, 1.8, 3.8, 5.8, 7.8), final), true, 3},
		{"late flush", flushes(t0, 4, 400, 100, 1.8, 3.8, 6.5, 8.5), false, 3},
		{"missing flush", flushes(t0, 4, 400, 100, 1.8, 3.8, 7.8), false, 2},
		{"incomplete", slices.Concat(flushes(t0, 4, 400, 100, 1.8, 3.8, 7.8), flushes(t0, 2, 200, 50, 5.8)), false, 3},
		{"too few", flushes(t0, 4, 400, 100, 0.5, 2.5), false, 1},
		{"none", nil, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := check(tc.posts)
			if c.ok() != tc.wantOK || c.interior != tc.wantInterior {
				t.Fatalf("ok %v interior %d (problems %v), want ok %v interior %d", c.ok(), c.interior, c.problems, tc.wantOK, tc.wantInterior)
			}
			// Each flush of the fixtures posts 1.8 s after its stamp.
			if tc.name == "steady" && c.maxLate != 1800*time.Millisecond {
				t.Fatalf("first POST at most %v after the boundary, want 1.8s", c.maxLate)
			}
			if tc.wantOK && (c.complete != c.interior || c.maxGap != interval) {
				t.Fatalf("complete %d of %d, max gap %v", c.complete, c.interior, c.maxGap)
			}
		})
	}
}

// At about one line per series per interval a flush may miss series whose
// line crossed a boundary: completeness is then not required, but the
// timing of flushes still is.
func TestCheckFlushesUnjudged(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	interval := 2 * time.Second
	start, end := t0, t0.Add(10*time.Second)
	if seriesJudgement(1.2) != "" {
		t.Error("1.2 lines per series per interval were not judged")
	}
	why := seriesJudgement(1.0)
	if why == "" {
		t.Fatal("1.0 lines per series per interval were judged")
	}
	incomplete := slices.Concat(flushes(t0, 4, 400, 100, 1.8, 3.8, 7.8), flushes(t0, 2, 200, 50, 5.8))
	late := flushes(t0, 4, 400, 100, 1.8, 3.8, 6.5, 8.5)
	for _, tc := range []struct {
		name     string
		posts    []postRecord
		unjudged string
		wantOK   bool
	}{
		{"incomplete, judged", incomplete, "", false},
		{"incomplete, unjudged", incomplete, why, true},
		{"late, unjudged", late, why, false},
	} {
		sort.Slice(tc.posts, func(i, j int) bool { return tc.posts[i].arrival.Before(tc.posts[j].arrival) })
		c := checkFlushes(tc.posts, start, end, interval, 400, 100, tc.unjudged)
		if c.ok() != tc.wantOK {
			t.Errorf("%s: ok %v (problems %v), want %v", tc.name, c.ok(), c.problems, tc.wantOK)
		}
		if tc.unjudged != "" && !strings.Contains(c.String(), "completeness not judged") {
			t.Errorf("%s: %q does not say completeness was not judged", tc.name, c.String())
		}
	}
}
