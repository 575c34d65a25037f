package samplers

import (
	"encoding/binary"
	"errors"
	"strings"
)

// A metric key identifies one series: name, type, scope, host and device
// overrides and sorted tags. It is built once per line into a reader's
// scratch buffer, hashed once, and the same bytes are the worker's map key,
// so a line costs one hash whichever worker it lands on.
//
// Layout: type byte, scope byte, then uvarint-length-prefixed name, host
// and device, then the tags joined by ','. Tags cannot contain ',' (it is
// the DogStatsD tag separator), so the join is unambiguous.

// AppendKey appends the key of l to dst.
func AppendKey(dst []byte, l *Line) []byte {
	return appendKey(dst, l.Type, l.Scope, l.Name, l.Host, l.Device, l.Tags)
}

// AppendForwardedKey appends the key of f to dst: the key a line of the
// same series has (forwarded series carry no host or device).
func AppendForwardedKey(dst []byte, f *Forwarded) []byte {
	return appendKey(dst, f.Type, f.Scope, f.Name, "", "", f.Tags)
}

// AppendKeyJoined appends the key of a series without host or device
// overrides whose tags, sorted, are joined by ',' in joined: the key of a
// forwarded series built from bytes.
func AppendKeyJoined(dst []byte, typ MetricType, scope MetricScope, name, joined []byte) []byte {
	dst = appendKey[[]byte](dst, typ, scope, name, nil, nil, nil)
	return append(dst, joined...)
}

// appendKey is the one key layout, for lines (bytes) and decoded series
// (strings) alike.
func appendKey[S ~string | ~[]byte](dst []byte, typ MetricType, scope MetricScope, name, host, device S, tags []S) []byte {
	dst = append(dst, byte(typ), byte(scope))
	dst = binary.AppendUvarint(dst, uint64(len(name)))
	dst = append(dst, name...)
	dst = binary.AppendUvarint(dst, uint64(len(host)))
	dst = append(dst, host...)
	dst = binary.AppendUvarint(dst, uint64(len(device)))
	dst = append(dst, device...)
	for i, t := range tags {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, t...)
	}
	return dst
}

// Key is a decoded metric key.
type Key struct {
	Series
	Type  MetricType
	Scope MetricScope
	// JoinedTags is Tags joined by ','.
	JoinedTags string
}

var errBadKey = errors.New("malformed metric key")

// DecodeKey splits a key built by AppendKey. The strings share the memory of
// key, so holding any of them keeps the key alive (which the worker does
// anyway).
func DecodeKey(key string) (Key, error) {
	var k Key
	if len(key) < 2 {
		return k, errBadKey
	}
	k.Type, k.Scope = MetricType(key[0]), MetricScope(key[1])
	rest := key[2:]
	var err error
	if k.Name, rest, err = lengthPrefixed(rest); err != nil {
		return k, err
	}
	if k.Host, rest, err = lengthPrefixed(rest); err != nil {
		return k, err
	}
	if k.Device, rest, err = lengthPrefixed(rest); err != nil {
		return k, err
	}
	k.JoinedTags = rest
	if rest != "" {
		k.Tags = strings.Split(rest, ",")
	}
	return k, nil
}

func lengthPrefixed(s string) (string, string, error) {
	var n uint64
	var shift uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		n |= uint64(c&0x7f) << shift
		if c < 0x80 {
			s = s[i+1:]
			if n > uint64(len(s)) {
				return "", "", errBadKey
			}
			return s[:n], s[n:], nil
		}
		shift += 7
	}
	return "", "", errBadKey
}

// KeyName returns the metric name of a key built by AppendKey without
// decoding the rest or allocating, and false for a malformed key.
func KeyName(key []byte) ([]byte, bool) {
	if len(key) < 2 {
		return nil, false
	}
	n, used := binary.Uvarint(key[2:])
	if used <= 0 || n > uint64(len(key)-2-used) {
		return nil, false
	}
	start := 2 + used
	return key[start : start+int(n)], true
}
