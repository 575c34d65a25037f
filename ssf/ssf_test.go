package ssf

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The field numbers are the wire format shared with SSF clients: a span
// encoded by hand with them decodes into the right fields.
func TestWireFieldNumbers(t *testing.T) {
	var sample []byte
	sample = protowire.AppendTag(sample, 1, protowire.VarintType)
	sample = protowire.AppendVarint(sample, 2) // HISTOGRAM
	sample = protowire.AppendTag(sample, 2, protowire.BytesType)
	sample = protowire.AppendString(sample, "lat")
	sample = protowire.AppendTag(sample, 3, protowire.Fixed32Type)
	sample = protowire.AppendFixed32(sample, 0x41400000) // 12.0
	sample = protowire.AppendTag(sample, 7, protowire.Fixed32Type)
	sample = protowire.AppendFixed32(sample, 0x3f000000) // 0.5

	var tag []byte
	tag = protowire.AppendTag(tag, 1, protowire.BytesType)
	tag = protowire.AppendString(tag, "env")
	tag = protowire.AppendTag(tag, 2, protowire.BytesType)
	tag = protowire.AppendString(tag, "dev")

	var b []byte
	for _, f := range []struct {
		num protowire.Number
		v   uint64
	}{{1, 1}, {2, 7}, {3, 8}, {4, 6}, {5, 100}, {6, 250}, {7, 1}, {12, 1}} {
		b = protowire.AppendTag(b, f.num, protowire.VarintType)
		b = protowire.AppendVarint(b, f.v)
	}
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendString(b, "api")
	b = protowire.AppendTag(b, 10, protowire.BytesType)
	b = protowire.AppendBytes(b, sample)
	b = protowire.AppendTag(b, 11, protowire.BytesType)
	b = protowire.AppendBytes(b, tag)
	b = protowire.AppendTag(b, 13, protowire.BytesType)
	b = protowire.AppendString(b, "GET /")

	var sp SSFSpan
	if err := proto.Unmarshal(b, &sp); err != nil {
		t.Fatal(err)
	}
	if sp.Version != 1 || sp.TraceId != 7 || sp.Id != 8 || sp.ParentId != 6 || sp.StartTimestamp != 100 || sp.EndTimestamp != 250 ||
		!sp.Error || !sp.Indicator || sp.Service != "api" || sp.Name != "GET /" || sp.Tags["env"] != "dev" || len(sp.Metrics) != 1 {
		t.Fatalf("decoded %v", &sp)
	}
	m := sp.Metrics[0]
	if m.Metric != SSFSample_HISTOGRAM || m.Name != "lat" || m.Value != 12 || m.SampleRate != 0.5 {
		t.Errorf("decoded sample %v", m)
	}
}
