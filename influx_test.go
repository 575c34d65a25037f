package veneur

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// With influx_address set, every flush is also written to InfluxDB, and
// the other sink keeps working. The InfluxDB here is a stand-in that
// records writes; plugins/influxdb tests the plugin against a real server.
func TestServerWritesToInfluxDB(t *testing.T) {
	type write struct{ query, body string }
	writes := make(chan write, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("write body: %v", err)
			return
		}
		b, _ := io.ReadAll(zr)
		writes <- write{r.URL.Path + "?" + r.URL.RawQuery, string(b)}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	s, out := startServer(t, testConfig(t, "influx_address: "+srv.URL+"\ninflux_db_name: metrics\ninflux_consistency: one\ntags: [\"region:eu\"]\n"))
	sendUDP(t, s.UDPAddr(), "hits:3|c|#code:200")
	waitProcessed(t, s, 1)
	s.Flush(context.Background(), time.Unix(1700000000, 0))
	shutdown(t, s)
	select {
	case w := <-writes:
		if want := "/write?consistency=one&db=metrics&precision=s"; w.query != want {
			t.Errorf("InfluxDB request %q, want %q", w.query, want)
		}
		if want := "hits,code=200,host=box,region=eu value=0.0008333333333333334 1700000000\n"; w.body != want {
			t.Errorf("InfluxDB got %q, want %q", w.body, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no write reached InfluxDB")
	}
	if out.String() == "" {
		t.Error("the stdout sink printed nothing once InfluxDB was added")
	}
}
