package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/PID/stat. Linux fixes it at 100 for user space on every architecture.
const clockTicksPerSecond = 100

// parseStatCPU returns utime+stime, in clock ticks, from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (uint64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("no ')' after the command name in %q; is this a /proc/PID/stat file?", truncate(stat, 80))
	}
	fields := bytes.Fields(stat[end+1:])
	// fields[0] is field 3 (state); utime is field 14, stime field 15.
	const utimeIdx, stimeIdx = 14 - 3, 15 - 3
	if len(fields) <= stimeIdx {
		return 0, fmt.Errorf("only %d fields after the command name, need %d; is this a /proc/PID/stat file?", len(fields), stimeIdx+1)
	}
	utime, err := strconv.ParseUint(string(fields[utimeIdx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime field: %w", err)
	}
	stime, err := strconv.ParseUint(string(fields[stimeIdx]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime field: %w", err)
	}
	return utime + stime, nil
}

// parseVmHWM returns the peak resident set size in KiB from the contents of
// /proc/PID/status.
func parseVmHWM(status []byte) (uint64, error) {
	for l := range bytes.SplitSeq(status, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(l, []byte("VmHWM:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("VmHWM line %q is not \"VmHWM: N kB\"", truncate(l, 80))
		}
		return strconv.ParseUint(string(f[0]), 10, 64)
	}
	return 0, fmt.Errorf("no VmHWM line in the status file; the kernel must expose /proc/PID/status")
}

// procCPUSeconds reads a live process's user+system CPU time.
func procCPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading CPU time of pid %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return float64(ticks) / clockTicksPerSecond, nil
}

// procPeakRSS reads a live process's peak resident set size in bytes.
func procPeakRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("reading peak RSS of pid %d: %w", pid, err)
	}
	kib, err := parseVmHWM(b)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return kib * 1024, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// parseCPUTimes returns the busy and total clock ticks of one CPU from the
// contents of /proc/stat. Busy is everything but idle and iowait.
func parseCPUTimes(stat []byte, cpu int) (busy, total uint64, err error) {
	label := []byte("cpu" + strconv.Itoa(cpu))
	for l := range bytes.SplitSeq(stat, []byte{'\n'}) {
		f := bytes.Fields(l)
		if len(f) < 5 || !bytes.Equal(f[0], label) {
			continue
		}
		// user nice system idle iowait irq softirq steal; guest time is
		// already part of user.
		for i, v := range f[1:min(len(f), 9)] {
			n, err := strconv.ParseUint(string(v), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("cpu%d field %d: %w", cpu, i+1, err)
			}
			total += n
			if i != 3 && i != 4 {
				busy += n
			}
		}
		return busy, total, nil
	}
	return 0, 0, fmt.Errorf("no cpu%d line in /proc/stat; is CPU %d online?", cpu, cpu)
}
