package grpcwire

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// A Message goes out as its bytes and comes back as a copy of what came,
// in one buffer or several; other values are protobuf.
func TestCodec(t *testing.T) {
	var c Codec
	if c.Name() != "proto" {
		t.Errorf("Name() = %q, want proto", c.Name())
	}
	msg := &Message{B: []byte("any bytes at all")}
	out, err := c.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	if got := out.Materialize(); !bytes.Equal(got, msg.B) {
		t.Errorf("marshalled %q, want %q", got, msg.B)
	}

	var in Message
	in.B = make([]byte, 0, 64)
	keep := in.B[:1]
	split := mem.BufferSlice{mem.SliceBuffer("hello, "), mem.SliceBuffer("world")}
	if err := c.Unmarshal(split, &in); err != nil {
		t.Fatal(err)
	}
	if string(in.B) != "hello, world" || &keep[0] != &in.B[0] {
		t.Errorf("received %q (reusing the buffer: %v), want hello, world in the same buffer", in.B, &keep[0] == &in.B[0])
	}
	big := bytes.Repeat([]byte{7}, 1000)
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(big)}, &in); err != nil || !bytes.Equal(in.B, big) {
		t.Errorf("received %d bytes (%v), want the 1000 sent", len(in.B), err)
	}
	big[0] = 8
	if in.B[0] != 7 {
		t.Error("the received bytes share memory with gRPC's buffer")
	}

	// Anything else is protobuf.
	out, err = c.Marshal(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(wrapperspb.String("x"))
	if !bytes.Equal(out.Materialize(), want) {
		t.Errorf("a protobuf message marshals as %x, want %x", out.Materialize(), want)
	}
	var s wrapperspb.StringValue
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, &s); err != nil || s.GetValue() != "x" {
		t.Errorf("unmarshalled %q (%v), want x", s.GetValue(), err)
	}
	if _, err := c.Marshal(42); err == nil {
		t.Error("an int marshalled")
	}
}
