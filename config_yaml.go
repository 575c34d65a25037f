package veneur

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// This file turns the bytes of a config file into a Config. yaml.v3 parses
// the file into a tree of nodes that carry their line numbers, and the
// checks below walk that tree before anything is decoded, so that every
// problem is reported with the key it concerns and the line it is on,
// without reading yaml's own error messages:
//
//   - a key that is not a Config field is reported, with the closest known
//     key as a suggestion;
//   - a key given twice in one mapping is reported, with both lines;
//   - each value is decoded on its own into the type of its field, so that a
//     type error belongs to that key alone.
//
// Only a document without any of these problems is decoded into Config.

// configField describes one YAML key of Config.
type configField struct {
	key  string
	kind reflect.Type
}

// configFields lists Config's YAML keys in declaration order.
func configFields() []configField {
	t := reflect.TypeOf(Config{})
	fields := make([]configField, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		fields = append(fields, configField{key: key, kind: f.Type})
	}
	return fields
}

func lookupField(fields []configField, key string) (configField, bool) {
	for _, f := range fields {
		if f.key == key {
			return f, true
		}
	}
	return configField{}, false
}

// decodeConfig decodes data into a Config. An empty document gives the zero
// Config. Every unknown key, repeated key and mistyped value is reported,
// joined with errors.Join, each naming its key and line.
func decodeConfig(data []byte) (Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, fmt.Errorf("config is not valid YAML: %w; check indentation and quoting near the line given", err)
	}
	root := documentRoot(&doc)
	if root == nil {
		return Config{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return Config{}, fmt.Errorf("config is a YAML %s; it must be a mapping of keys to values, such as \"udp_address: 127.0.0.1:8126\"", describeKind(root))
	}

	w := configWalker{
		fields: configFields(),
		walked: map[*yaml.Node]bool{},
		open:   map[*yaml.Node]bool{},
	}
	w.walk(root)
	if len(w.errs) > 0 {
		return Config{}, errors.Join(w.errs...)
	}

	// Every key is known, set once and of the right type, so this decode
	// is expected to succeed; its error is still reported if it does not.
	var c Config
	if err := root.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// documentRoot returns the top-level node of a parsed document, or nil when
// the document is empty or null (no content, only comments, "---", "~").
func documentRoot(doc *yaml.Node) *yaml.Node {
	n := doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	n = resolveAlias(n)
	if n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == nullTag) {
		return nil
	}
	return n
}

// Tags yaml.v3 resolves plain scalars to, as Node.ShortTag returns them.
const (
	nullTag  = "!!null"
	strTag   = "!!str"
	floatTag = "!!float"
	mergeTag = "!!merge"
)

// resolveAlias returns the node an alias (*name) refers to, and any other
// node unchanged. yaml.v3 never makes an alias of an alias, since an alias
// cannot carry an anchor, so one step suffices.
func resolveAlias(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

// isMergeKey reports whether n is the unquoted merge key "<<", whose value
// is a mapping (or list of mappings) whose keys are set as if they were
// written in place, unless the mapping sets them itself.
func isMergeKey(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "<<" && n.ShortTag() == mergeTag
}

// configWalker checks the keys and values of the config's top-level
// mapping and of the mappings merged into it, collecting every problem.
type configWalker struct {
	fields []configField
	errs   []error
	// walked holds every mapping already checked, so that a mapping merged
	// many times (through aliases) is checked, and reported on, once.
	walked map[*yaml.Node]bool
	// open holds the mappings being checked, from the top-level one down
	// through merges: meeting one again means it merges itself.
	open map[*yaml.Node]bool
}

func (w *configWalker) add(err error) {
	w.errs = append(w.errs, err)
}

// walk checks mapping m and, through its merge keys, the mappings merged
// into it. A key may appear once per mapping; a merged mapping may set a key
// that m also sets, m's value winning, as yaml.v3 decodes it.
func (w *configWalker) walk(m *yaml.Node) {
	w.walked[m] = true
	w.open[m] = true
	defer delete(w.open, m)

	firstLine := make(map[string]int) // key -> line it is first set on
	mergeLine := 0
	for i := 0; i+1 < len(m.Content); i += 2 {
		keyNode, value := m.Content[i], m.Content[i+1]
		// An aliased key (*name: value) is reported on the line of the
		// alias, where the key is used, not where it was defined.
		line := keyNode.Line
		// yaml.v3 merges only for a "<<" written in place, not for an alias
		// of one, which it takes as the plain key "<<".
		if isMergeKey(keyNode) {
			if mergeLine > 0 {
				w.add(fmt.Errorf("line %d: merge key << is used more than once in a mapping (first on line %d); merge a list instead, as in <<: [*a, *b]", line, mergeLine))
				continue
			}
			mergeLine = line
			w.merge(line, value)
			continue
		}
		key := resolveAlias(keyNode)
		if key == nil {
			continue
		}
		if key.Kind != yaml.ScalarNode {
			w.add(fmt.Errorf("line %d: a config key must be a name, not %s", line, describeNode(key)))
			continue
		}
		name := key.Value
		f, known := lookupField(w.fields, name)
		if first, repeated := firstLine[name]; repeated {
			w.add(fmt.Errorf("line %d: config key %q is set more than once (first on line %d); keep one", line, name, first))
			if !known {
				// Already reported as unknown on its first line.
				continue
			}
		} else {
			firstLine[name] = line
		}
		if !known {
			w.add(unknownKeyError(line, name, w.fields))
			continue
		}
		if err := checkValue(f, value); err != nil {
			w.add(fmt.Errorf("line %d: %w", line, err))
			continue
		}
		if fixed := nullItemsAsZero(f, value); fixed != nil {
			m.Content[i+1] = fixed
		}
	}
}

// merge checks the value of a merge key on line: a mapping, an alias of
// one, or a list written in place of mappings and aliases of mappings, each
// checked as walk does. These are the forms yaml.v3 merges.
func (w *configWalker) merge(line int, value *yaml.Node) {
	v := resolveAlias(value)
	switch {
	case v == nil:
		return
	case v.Kind == yaml.MappingNode:
		w.mergeMapping(line, v)
	case v.Kind == yaml.SequenceNode && value.Kind == yaml.AliasNode:
		w.add(fmt.Errorf("line %d: merge key << is given an alias of a list; write the list in place, as in <<: [*a, *b]", line))
	case v.Kind == yaml.SequenceNode:
		for i, item := range v.Content {
			m := resolveAlias(item)
			if m == nil || m.Kind != yaml.MappingNode {
				w.add(fmt.Errorf("line %d: merge key <<: item %d (line %d) is %s; only mappings can be merged", line, i+1, item.Line, describeNode(item)))
				continue
			}
			w.mergeMapping(line, m)
		}
	default:
		w.add(fmt.Errorf("line %d: merge key << is given %s; give a mapping or a list of mappings, such as *defaults", line, describeNode(v)))
	}
}

func (w *configWalker) mergeMapping(line int, m *yaml.Node) {
	switch {
	case w.open[m]:
		w.add(fmt.Errorf("line %d: merge key << merges a mapping into itself (the mapping on line %d)", line, m.Line))
	case !w.walked[m]:
		w.walk(m)
	}
}

// checkValue reports whether value, the value of key f, decodes into f's
// type, naming the first list item that does not.
func checkValue(f configField, value *yaml.Node) error {
	v := resolveAlias(value)
	if v == nil {
		return nil
	}
	if f.kind.Kind() == reflect.Slice && v.Kind == yaml.SequenceNode {
		for i, item := range v.Content {
			ok, err := fits(item, f.kind.Elem())
			if err != nil {
				return fmt.Errorf("config key %q: %s[%d] (line %d): %w", f.key, f.key, i, item.Line, err)
			}
			if !ok {
				return fmt.Errorf("config key %q: got %s, want %s; %s[%d] (line %d) is %s",
					f.key, describeNode(v), describeType(f.kind), f.key, i, item.Line, describeNode(item))
			}
		}
		return nil
	}
	ok, err := fits(v, f.kind)
	if err != nil {
		return fmt.Errorf("config key %q: %w", f.key, err)
	}
	if !ok {
		return fmt.Errorf("config key %q: got %s, want %s", f.key, describeNode(v), describeType(f.kind))
	}
	return nil
}

// nullItemsAsZero returns a copy of a list value in which each null item,
// as in "tags: [a, ~]" or an empty "-" line, is an explicit zero of the
// item type ("" or 0), or nil when the value is not a list with a null
// item. yaml.v2 decoded a null item as that zero while yaml.v3 drops it
// from the list; decoding the copy instead keeps existing configs decoding
// as they did, and leaves "percentiles: [0.5, ~]" for Validate to report
// rather than silently shortening the list. The list itself is left as it
// is, since other keys may refer to it through an alias.
func nullItemsAsZero(f configField, value *yaml.Node) *yaml.Node {
	v := resolveAlias(value)
	if f.kind.Kind() != reflect.Slice || v == nil || v.Kind != yaml.SequenceNode {
		return nil
	}
	var fixed *yaml.Node
	for i, item := range v.Content {
		it := resolveAlias(item)
		if it == nil || it.Kind != yaml.ScalarNode || it.ShortTag() != nullTag {
			continue
		}
		var zero yaml.Node
		if err := zero.Encode(reflect.Zero(f.kind.Elem()).Interface()); err != nil {
			continue
		}
		zero.Line, zero.Column = item.Line, item.Column
		if fixed == nil {
			c := *v
			c.Anchor = ""
			c.Content = append([]*yaml.Node(nil), v.Content...)
			fixed = &c
		}
		fixed.Content[i] = &zero
	}
	return fixed
}

// fits reports whether n decodes into a value of type t, a field type of
// Config or the item type of one of its lists. A mismatch is false with a
// nil error; an error is a value yaml.v3 cannot decode at all, such as
// !!binary text that is not base64.
//
// Only scalars are handed to yaml.v3 to decode: no field type takes a
// mapping, and lists are checked item by item, which also keeps the work
// linear in the size of the value however it is written.
func fits(n *yaml.Node, t reflect.Type) (bool, error) {
	n = resolveAlias(n)
	if n == nil {
		return true, nil
	}
	switch n.Kind {
	case yaml.ScalarNode:
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return false, nil
		}
		for _, item := range n.Content {
			if ok, err := fits(item, t.Elem()); !ok || err != nil {
				return ok, err
			}
		}
		return true, nil
	default:
		return false, nil
	}
	err := n.Decode(reflect.New(t).Interface())
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if t.Kind() == reflect.Int {
		return isWholeNumber(n), nil
	}
	return true, nil
}

// isWholeNumber reports whether a scalar that decodes into an int is a
// whole number in int64's range. yaml.v3 truncates a float such as 1.5 to
// fit an int field; that is a mistake in a config, so it is reported.
func isWholeNumber(n *yaml.Node) bool {
	if n.ShortTag() != floatTag {
		return true
	}
	var x float64
	if err := n.Decode(&x); err != nil {
		return false
	}
	return x == math.Trunc(x) && x >= math.MinInt64 && x < math.MaxInt64
}

// describeKind names the kind of a document's top-level node.
func describeKind(n *yaml.Node) string {
	switch {
	case n.Kind == yaml.SequenceNode:
		return "list"
	case n.Kind == yaml.ScalarNode && n.ShortTag() == strTag:
		return "string"
	}
	return "scalar"
}

func describeType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		switch t.Elem().Kind() {
		case reflect.String:
			return `a list of strings, such as ["a", "b"]`
		case reflect.Float64:
			return "a list of numbers, such as [0.5, 0.99]"
		}
	}
	return t.String()
}

// describeLimit is the most runes of a value an error message shows.
const describeLimit = 60

// describeNode renders a value briefly for an error message: a string
// quoted, a number as Go prints it, "a list [a b]" or "a mapping".
func describeNode(n *yaml.Node) string {
	n = resolveAlias(n)
	var s string
	switch {
	case n == nil:
		return "null"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		var b strings.Builder
		writeNode(&b, n)
		s = "a list " + b.String()
	case n.Kind != yaml.ScalarNode:
		return "an empty node"
	default:
		switch n.ShortTag() {
		case nullTag:
			return "null"
		case strTag:
			s = strconv.Quote(n.Value)
		case floatTag:
			// Print a float as Go does, so that 1e30 reads 1e+30 and
			// 1.50 reads 1.5.
			var x float64
			if err := n.Decode(&x); err == nil {
				s = fmt.Sprint(x)
			} else {
				s = n.Value
			}
		default:
			s = n.Value
		}
	}
	if r := []rune(s); len(r) > describeLimit {
		s = string(r[:describeLimit]) + "..."
	}
	return s
}

// writeNode writes a list as "[a b [c]]", items unquoted. It stops once
// more than describeLimit runes' worth is written, which bounds the work
// for a huge list and for a list that contains itself through an alias.
func writeNode(b *strings.Builder, n *yaml.Node) {
	if b.Len() > 4*describeLimit {
		return
	}
	n = resolveAlias(n)
	switch {
	case n == nil:
		b.WriteString("null")
	case n.Kind == yaml.SequenceNode:
		b.WriteByte('[')
		for i, item := range n.Content {
			if b.Len() > 4*describeLimit {
				break
			}
			if i > 0 {
				b.WriteByte(' ')
			}
			writeNode(b, item)
		}
		b.WriteByte(']')
	case n.Kind == yaml.MappingNode:
		b.WriteString("{...}")
	default:
		v := n.Value
		if len(v) > 4*describeLimit {
			v = v[:4*describeLimit]
		}
		b.WriteString(v)
	}
}

// unknownKeyError reports an unknown key on line, suggesting the closest
// known key when one is close enough to be a likely misspelling.
func unknownKeyError(line int, key string, fields []configField) error {
	if s := suggestKey(key, fields); s != "" {
		return fmt.Errorf("line %d: unknown config key %q; did you mean %q?", line, key, s)
	}
	return fmt.Errorf("line %d: unknown config key %q; see docs/configuration.md or example.yaml for the valid keys", line, key)
}

// keySeparators deletes the separators suggestKey ignores. It is built
// once: building a Replacer costs far more than using one, and a config
// may have many unknown keys.
var keySeparators = strings.NewReplacer("_", "", "-", "")

// suggestKey returns the known key closest to key, or "" when none is
// close. Keys are compared ignoring case, "_" and "-", so that
// "UdpAddress" and "udp-address" both suggest "udp_address".
func suggestKey(key string, fields []configField) string {
	norm := func(s string) string {
		return keySeparators.Replace(strings.ToLower(s))
	}
	k := norm(key)
	if k == "" || len(k) > 64 {
		return ""
	}
	best, bestDist := "", -1
	var prefixed []string
	for _, f := range fields {
		n := norm(f.key)
		d := editDistance(k, n)
		if bestDist < 0 || d < bestDist {
			best, bestDist = f.key, d
		}
		if len(k) >= 4 && strings.HasPrefix(n, k) {
			prefixed = append(prefixed, f.key)
		}
	}
	limit := max(2, len(k)/4)
	if len(k) <= 3 {
		limit = 1
	}
	if bestDist >= 0 && bestDist <= limit {
		return best
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	return ""
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and adjacent transpositions each
// cost one.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// d(i, j) is the distance between ra[:i] and rb[:j], kept in one slice
	// of len(ra)+1 rows of len(rb)+1 cells, so a call allocates once.
	w := len(rb) + 1
	cells := make([]int, (len(ra)+1)*w)
	d := func(i, j int) *int { return &cells[i*w+j] }
	for i := 0; i <= len(ra); i++ {
		*d(i, 0) = i
	}
	for j := 0; j <= len(rb); j++ {
		*d(0, j) = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			v := min(*d(i-1, j)+1, *d(i, j-1)+1, *d(i-1, j-1)+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				v = min(v, *d(i-2, j-2)+1)
			}
			*d(i, j) = v
		}
	}
	return *d(len(ra), len(rb))
}
