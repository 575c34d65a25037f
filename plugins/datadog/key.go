package datadog

import (
	"fmt"
	"strings"
)

// APIKeyLength is the length of a Datadog API key: 32 hexadecimal
// characters. (An application key, which the series API does not take,
// has 40.)
const APIKeyLength = 32

// placeholderWords are parts of the values people leave in a config
// before they have a key: example.yaml's "your-datadog-api-key", and the
// usual stand-ins. None is made of hexadecimal characters only, so none
// can occur in a real key.
var placeholderWords = []string{
	"your", "changeme", "change-me", "change_me", "placeholder", "example",
	"replace", "dummy", "fixme", "todo", "insert", "api-key", "api_key",
	"apikey", "xxx", "<", ">",
}

// checkKey is the error of an empty key when api_hostname is set: every
// post would be refused.
func checkKey(apiHostname, key string) error {
	if key == "" {
		return fmt.Errorf("key is empty but api_hostname is %q, so Datadog would refuse every flush; set key to your Datadog API key, or leave api_hostname empty to print flushes to standard output instead", apiHostname)
	}
	return nil
}

// KeyWarning returns why a non-empty Datadog API key (the key config
// key) looks wrong, or "" when it looks like a key: it is
// APIKeyLength hexadecimal characters. A key that holds a placeholder
// word (as example.yaml's does), "$" (a variable veneur does not
// expand), or one character repeated is called a placeholder; any other
// key of another form gets a warning that says so, since a
// Datadog-compatible API may use keys of its own. The warning never
// repeats the key.
func KeyWarning(key string) string {
	if key == "" {
		return ""
	}
	lower := strings.ToLower(key)
	if strings.Contains(key, "$") {
		return `key looks like a variable reference (it contains "$"), which veneur does not expand; write the Datadog API key itself into the config`
	}
	for _, w := range placeholderWords {
		if strings.Contains(lower, w) {
			return fmt.Sprintf("key looks like a placeholder (it contains %q); set it to your Datadog API key, %d hexadecimal characters", w, APIKeyLength)
		}
	}
	if strings.Count(key, key[:1]) == len(key) {
		return fmt.Sprintf("key looks like a placeholder (one character repeated); set it to your Datadog API key, %d hexadecimal characters", APIKeyLength)
	}
	if len(key) != APIKeyLength || strings.TrimLeft(lower, "0123456789abcdef") != "" {
		return fmt.Sprintf("key has %d characters, not the %d hexadecimal characters of a Datadog API key; check that it is the API key (an application key has 40) and that it was pasted whole, without spaces (a Datadog-compatible API whose keys look different can ignore this)", len(key), APIKeyLength)
	}
	return ""
}
