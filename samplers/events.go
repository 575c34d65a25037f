package samplers

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// Event is a DogStatsD event:
//
//	_e{TITLE_LEN,TEXT_LEN}:TITLE|TEXT|d:TIMESTAMP|h:HOST|k:AGGREGATION_KEY|p:PRIORITY|s:SOURCE|t:ALERT_TYPE|#TAGS
//
// TITLE_LEN and TEXT_LEN are byte lengths; newlines in the text arrive as
// the two characters \n. Every field after the text is optional and they
// may come in any order; unknown ones are ignored.
type Event struct {
	Title, Text    string
	Timestamp      int64 // unix seconds; 0 means when it was received
	Host           string
	AggregationKey string
	Priority       string // normal or low
	SourceType     string
	AlertType      string // info, warning, error or success
	Tags           []string
}

// ServiceCheck is a DogStatsD service check:
//
//	_sc|NAME|STATUS|d:TIMESTAMP|h:HOST|#TAGS|m:MESSAGE
//
// STATUS is 0 (OK), 1 (warning), 2 (critical) or 3 (unknown). The message
// comes last and runs to the end of the line ("m\:" inside it stands for
// "m:", and \n for a newline).
type ServiceCheck struct {
	Name      string
	Status    int
	Timestamp int64 // unix seconds; 0 means when it was received
	Host      string
	Message   string
	Tags      []string
}

// Errors of ParseEvent and ParseServiceCheck.
var (
	ErrBadEvent        = errors.New("malformed event (_e{title_len,text_len}:title|text|...)")
	ErrBadServiceCheck = errors.New("malformed service check (_sc|name|status|...)")
)

// ParseEvent parses an event line. The strings it returns are copies.
func ParseEvent(line []byte) (Event, error) {
	var e Event
	rest, ok := bytes.CutPrefix(line, []byte("_e{"))
	if !ok {
		return e, ErrBadEvent
	}
	lens, rest, ok := bytes.Cut(rest, []byte("}:"))
	if !ok {
		return e, ErrBadEvent
	}
	tl, xl, ok := bytes.Cut(lens, []byte(","))
	if !ok {
		return e, ErrBadEvent
	}
	titleLen, err1 := strconv.Atoi(string(tl))
	textLen, err2 := strconv.Atoi(string(xl))
	if err1 != nil || err2 != nil || titleLen <= 0 || textLen < 0 || titleLen+1+textLen > len(rest) || rest[titleLen] != '|' {
		return e, ErrBadEvent
	}
	e.Title = string(rest[:titleLen])
	e.Text = strings.ReplaceAll(string(rest[titleLen+1:titleLen+1+textLen]), `\n`, "\n")
	rest = rest[titleLen+1+textLen:]
	if len(rest) > 0 && rest[0] != '|' {
		return e, ErrBadEvent
	}
	for len(rest) > 0 {
		var field []byte
		field, rest = nextField(rest[1:])
		switch {
		case len(field) == 0:
			return e, ErrBadEvent
		case field[0] == '#':
			e.Tags = splitTags(field[1:])
		case len(field) < 2 || field[1] != ':':
			// an unknown field: ignored
		default:
			v := string(field[2:])
			switch field[0] {
			case 'd':
				ts, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return e, ErrBadEvent
				}
				e.Timestamp = ts
			case 'h':
				e.Host = v
			case 'k':
				e.AggregationKey = v
			case 'p':
				e.Priority = v
			case 's':
				e.SourceType = v
			case 't':
				e.AlertType = v
			}
		}
	}
	return e, nil
}

// ParseServiceCheck parses a service check line. The strings it returns
// are copies.
func ParseServiceCheck(line []byte) (ServiceCheck, error) {
	var c ServiceCheck
	rest, ok := bytes.CutPrefix(line, []byte("_sc|"))
	if !ok {
		return c, ErrBadServiceCheck
	}
	name, rest := nextField(rest)
	status, rest := nextField(rest[min(1, len(rest)):])
	if len(name) == 0 || len(status) != 1 || status[0] < '0' || status[0] > '3' {
		return c, ErrBadServiceCheck
	}
	c.Name, c.Status = string(name), int(status[0]-'0')
	for len(rest) > 0 {
		rest = rest[1:]
		if m, ok := bytes.CutPrefix(rest, []byte("m:")); ok {
			msg := strings.ReplaceAll(string(m), `m\:`, "m:")
			c.Message = strings.ReplaceAll(msg, `\n`, "\n")
			break
		}
		var field []byte
		field, rest = nextField(rest)
		switch {
		case len(field) == 0:
			return c, ErrBadServiceCheck
		case field[0] == '#':
			c.Tags = splitTags(field[1:])
		case len(field) < 2 || field[1] != ':':
		case field[0] == 'd':
			ts, err := strconv.ParseInt(string(field[2:]), 10, 64)
			if err != nil {
				return c, ErrBadServiceCheck
			}
			c.Timestamp = ts
		case field[0] == 'h':
			c.Host = string(field[2:])
		}
	}
	return c, nil
}

// nextField splits b at its first '|': the field, and the rest starting at
// that '|' (empty when there is none).
func nextField(b []byte) (field, rest []byte) {
	if i := bytes.IndexByte(b, '|'); i >= 0 {
		return b[:i], b[i:]
	}
	return b, nil
}

// splitTags returns the comma-separated tags of b, sorted, without empty
// ones.
func splitTags(b []byte) []string {
	var tags []string
	for t := range bytes.SplitSeq(b, []byte(",")) {
		if len(t) > 0 {
			tags = append(tags, string(t))
		}
	}
	slices.Sort(tags)
	return tags
}
