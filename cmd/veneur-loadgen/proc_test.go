package main

import "testing"

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, in string
		want     uint64
		wantErr  bool
	}{
		{name: "plain", in: "4242 (veneur) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 8 0 12345 123456789 2000 18446744073709551615\n", want: 175},
		{name: "spaces and parens in name", in: "7 (a b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1\n", want: 7},
		{name: "no paren", in: "7 veneur S 1", wantErr: true},
		{name: "short", in: "7 (v) S 1 2 3", wantErr: true},
		{name: "not a number", in: "7 (v) S 1 7 7 0 -1 0 0 0 0 0 x 4 0", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tveneur\nVmPeak:\t  800000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n"
	if got, err := parseVmHWM([]byte(status)); err != nil || got != 51234 {
		t.Fatalf("got %d, %v; want 51234", got, err)
	}
	for _, bad := range []string{"", "VmRSS:\t1 kB\n", "VmHWM:\t12 MB\n", "VmHWM:\tx kB\n", "VmHWM:\n"} {
		if got, err := parseVmHWM([]byte(bad)); err == nil {
			t.Errorf("parseVmHWM(%q) = %d, want an error", bad, got)
		}
	}
}

func TestParseCPUTimes(t *testing.T) {
	stat := "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 1 4 50 2 1 1 1 0 0\ncpu1 7 0 3 40 0 0 0 0 0 0\nintr 1 2 3\n"
	tests := []struct {
		cpu               int
		wantBusy, wantAll uint64
		wantErr           bool
	}{
		{cpu: 0, wantBusy: 5 + 1 + 4 + 1 + 1 + 1, wantAll: 65},
		{cpu: 1, wantBusy: 10, wantAll: 50},
		{cpu: 2, wantErr: true},
	}
	for _, tc := range tests {
		busy, all, err := parseCPUTimes([]byte(stat), tc.cpu)
		if (err != nil) != tc.wantErr || busy != tc.wantBusy || all != tc.wantAll {
			t.Errorf("cpu%d: busy %d total %d err %v; want %d %d error %v", tc.cpu, busy, all, err, tc.wantBusy, tc.wantAll, tc.wantErr)
		}
	}
	if _, _, err := parseCPUTimes([]byte("cpu0 1 x 3 4 5\n"), 0); err == nil {
		t.Error("a non-numeric field was accepted")
	}
	// "cpu1" must not match "cpu10".
	if busy, _, err := parseCPUTimes([]byte("cpu10 9 9 9 9 9\ncpu1 1 0 0 1 0\n"), 1); err != nil || busy != 1 {
		t.Errorf("cpu1 read as %d, %v", busy, err)
	}
}
