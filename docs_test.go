package veneur

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"gopkg.in/yaml.v3"
)

// docFiles returns README.md and every page under docs/.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{"README.md"}, pages...)
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// documentedKeys returns the config keys that have a row in the table of
// docs/configuration.md: the names in backquotes in a row's first cell.
func documentedKeys(t *testing.T) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	name := regexp.MustCompile("`([a-z0-9_]+)`")
	for _, line := range strings.Split(readDoc(t, filepath.Join("docs", "configuration.md")), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			keys[m[1]] = true
		}
	}
	return keys
}

// Every key of example.yaml, and every key Config knows, has a row in
// docs/configuration.md's table.
func TestConfigurationDocListsEveryKey(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(readDoc(t, "example.yaml")), &doc); err != nil {
		t.Fatal(err)
	}
	root := documentRoot(&doc)
	if root == nil || root.Kind != yaml.MappingNode {
		t.Fatal("example.yaml is not a mapping")
	}
	documented := documentedKeys(t)
	for i := 0; i < len(root.Content); i += 2 {
		if k := root.Content[i].Value; !documented[k] {
			t.Errorf("example.yaml's key %q has no row in docs/configuration.md", k)
		}
	}
	for _, f := range configFields() {
		if !documented[f.key] {
			t.Errorf("config key %q has no row in docs/configuration.md", f.key)
		}
	}
}

// Every self-metric the code sends under a literal name is in the
// reference of docs/operations.md, as veneur.NAME.
func TestOperationsDocListsSelfMetrics(t *testing.T) {
	sources, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"listen", "forward", "plugins", "plugins/*"} {
		more, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, more...)
	}
	sent := regexp.MustCompile(`(?:stats|Stats)\.(?:Count|Gauge|TimeInMilliseconds|Histogram|Timing)\("([a-z_.]+)"|\.Report\(stats, "([a-z_.]+)"`)
	names := map[string]bool{}
	for _, path := range sources {
		if strings.HasSuffix(path, "_test.go") {
			continue
		}
		for _, m := range sent.FindAllStringSubmatch(readDoc(t, path), -1) {
			names[m[1]+m[2]] = true
		}
	}
	if len(names) < 20 {
		t.Fatalf("found only %d self-metric names in the code; the pattern no longer matches how they are sent", len(names))
	}
	ops := readDoc(t, filepath.Join("docs", "operations.md"))
	var missing []string
	for n := range names {
		if !strings.Contains(ops, "`veneur."+n+"`") {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("self-metric veneur.%s is not in docs/operations.md", n)
	}
}

// anchor is the fragment GitHub gives a heading: lower case, spaces as
// hyphens, punctuation other than - and _ left out.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns the fragments of a page's headings, outside code blocks.
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	fence := false
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if fence || !strings.HasPrefix(line, "#") {
			continue
		}
		out[anchor(strings.TrimSpace(strings.TrimLeft(line, "#")))] = true
	}
	return out
}

// Every relative link of README.md and docs/ names a file of the
// repository, and its #fragment a heading of that page.
func TestDocLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	for _, page := range docFiles(t) {
		text := readDoc(t, page)
		for _, m := range link.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: %v", page, target, err)
				continue
			}
			if frag != "" && !anchors(readDoc(t, path))[frag] {
				t.Errorf("%s: link %q: %s has no heading #%s", page, target, path, frag)
			}
		}
	}
}

// The README stays short enough to read before deploying: what veneur
// is, the two commands, a local and a global, links. The rest belongs in
// docs/, one page per topic.
func TestReadmeIsShort(t *testing.T) {
	const most = 250
	if n := strings.Count(readDoc(t, "README.md"), "\n"); n > most {
		t.Errorf("README.md has %d lines, more than %d; move the details into a page of docs/ and link it", n, most)
	}
}

// LICENSE is MIT, in the veneur authors' name.
func TestLicense(t *testing.T) {
	text := readDoc(t, "LICENSE")
	for _, w := range []string{"MIT License", "Copyright (c) The veneur authors", "Permission is hereby granted, free of charge"} {
		if !strings.Contains(text, w) {
			t.Errorf("LICENSE lacks %q", w)
		}
	}
}

// What veneur 1.1.0's README promised its users stays documented: its
// magic tags, expiry, the forwarding rules, the metrics it told them to
// watch, and its plugins. (Its config keys: TestConfigurationDocListsEveryKey.)
func TestDocsKeepThe110Promises(t *testing.T) {
	var all strings.Builder
	for _, page := range docFiles(t) {
		all.WriteString(strings.Join(strings.Fields(readDoc(t, page)), " "))
		all.WriteByte('\n')
	}
	for _, w := range []string{
		"`veneurlocalonly`", "`veneurglobalonly`", "`host:NAME` and `device:NAME` tags",
		"never as a zero",
		"give locals and the global the same `interval`",
		"the local instance's `tags` are not added",
		"Never point an instance's `forward_address` at itself",
		"an instance may both receive imports and forward (a tree)",
		"`einhorn@N`", "`SO_REUSEPORT`", "**each end with `\\n`**",
		"t-digest", "HyperLogLog", "Sentry", "InfluxDB", "S3",
		"`veneur.packet.error_total`", "`veneur.flush.post_metrics_total`", "`veneur.forward.post_metrics_total`",
		"`veneur.flush.content_length_bytes`", "`veneur.flush.duration_ns`", "`veneur.forward.duration_ns`",
		"`veneur.flush.total_duration_ns`", "`veneur.flush.error_total`", "`veneur.forward.error_total`",
		"`veneur.flush.worker_duration_ns`", "`veneur.worker.metrics_processed_total`", "`veneur.worker.metrics_flushed_total`",
		"`veneur.worker.metrics_imported_total`", "`veneur.import.response_duration_ns`", "`veneur.import.request_error_total`",
	} {
		if !strings.Contains(all.String(), w) {
			t.Errorf("README.md and docs/ no longer say %q", w)
		}
	}
}
