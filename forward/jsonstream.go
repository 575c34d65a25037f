package forward

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxImportElement bounds one element of an imported JSON array (with the
// comma and space before it), in bytes: 16 MiB. It is far above any real
// metric, so that no honest request meets it: the largest state is a
// t-digest at the highest compression (10000), which encodes to about
// 230 KB (300 KB in base64); a set's sketch is at most 16 KiB (22 KiB); a
// name and its tags come from one DogStatsD packet, 4 KiB by default
// (metric_max_length), six times that if every byte is escaped.
// It only bounds the decoder's memory: a request whose body is within the
// body cap but holds a larger element is refused whole.
const maxImportElement = 16 << 20

// errTrailingData is the error of a body with more than whitespace after
// its array.
var errTrailingData = errors.New("body has data after the JSON array")

// streamLimits are the limits of readJSONArray: the bytes of one element
// (maxImportElement), and the whitespace allowed before a body is refused
// as mostly whitespace (whitespaceSlack, see spaceSqueezer).
type streamLimits struct {
	element, spaceSlack int64
}

// readJSONArray reads one JSON array of JSONMetric from r, and calls each
// with every element in turn, its index, and its size in bytes (as
// decoded, its whitespace squeezed); m and its Tags are reused for the
// next element, so each keeps neither. It decodes one element at a time,
// so memory follows the largest element, not the body: the decoder reads
// at most lim.element bytes past the start of an element (else a
// *tooLargeError), and a run of whitespace anywhere reaches it as one
// space (a body mostly of whitespace is a *whitespaceError).
//
// It returns nil when r held exactly one array, and whitespace around it.
// Otherwise the error is each's, r's (*readError, *tooLargeError), the
// squeezer's (*whitespaceError), or says why the body is not such an
// array: a JSON syntax error, an element that is not an object of
// JSONMetric's fields (*json.UnmarshalTypeError), an early end, or
// errTrailingData. each may have been called for the elements before the
// error; an error of each stops the reading at once.
func readJSONArray(r io.Reader, lim streamLimits, each func(i int, m *JSONMetric, size int64) error) error {
	el := &elementLimit{r: &spaceSqueezer{r: r, slack: lim.spaceSlack}, max: lim.element}
	dec := json.NewDecoder(el)
	el.from(0)
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok != json.Delim('[') {
		return fmt.Errorf("starts with %v, not [", tok)
	}
	var m JSONMetric
	for i := 0; ; i++ {
		start := dec.InputOffset()
		el.from(start)
		// More is false at the closing ] and at an error, which Token
		// below returns again: the readers' errors are sticky.
		if !dec.More() {
			break
		}
		// Decode leaves the fields an element does not have as they
		// were, so each is cleared; the tags' array is kept, as Decode
		// appends to it from the start.
		m = JSONMetric{Tags: m.Tags[:0]}
		if err := dec.Decode(&m); err != nil {
			return noEOF(err)
		}
		if err := each(i, &m, dec.InputOffset()-start); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil {
		return noEOF(err)
	}
	el.from(dec.InputOffset())
	_, err = dec.Token()
	switch {
	case err == io.EOF:
		return nil
	case err == nil:
		return errTrailingData
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: %v", errTrailingData, err)
	}
	return err
}

// noEOF is err, with io.EOF, which is a body cut short within the array,
// said as io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
