package forward

import (
	"slices"
)

// Ring is an immutable set of members (the forward URLs of the globals of
// a tier) and the ownership of series among them by rendezvous
// (highest-random-weight) hashing: the owner of a key is the member whose
// weight for that key is the highest, where
//
//	weight(key, member) = fmix64(KeyHash(key) ^ memberHash(member))
//
// and ties go to the member that sorts first. Adding a member moves to it
// only the keys it now wins (about 1/N of them); removing one moves only
// the keys it owned, each to its runner-up; no other key changes owner.
//
// Ownership depends on nothing but the member set and the key bytes, so
// every process of every version that has the same members routes a key
// to the same member. A nil *Ring is an empty ring.
type Ring struct {
	members []string
	hashes  []uint64 // memberHash(members[i])
}

// NewRing returns the ring of members. Duplicates and empty strings are
// dropped and the rest sorted, so the order of the input does not matter;
// members is not kept.
func NewRing(members []string) *Ring {
	m := make([]string, 0, len(members))
	for _, s := range members {
		if s != "" {
			m = append(m, s)
		}
	}
	slices.Sort(m)
	m = slices.Compact(m)
	r := &Ring{members: m, hashes: make([]uint64, len(m))}
	for i, s := range m {
		r.hashes[i] = memberHash(s)
	}
	return r
}

// Members returns a copy of the members, sorted. Owner's results index it.
func (r *Ring) Members() []string {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Member returns member i (an index that Owner returned) without copying
// the member list.
func (r *Ring) Member(i int) string { return r.members[i] }

// Len is the number of members.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}

// Index returns the index of member in Members, or -1 when it is not a
// member.
func (r *Ring) Index(member string) int {
	if r == nil {
		return -1
	}
	i, ok := slices.BinarySearch(r.members, member)
	if !ok {
		return -1
	}
	return i
}

// Equal reports whether r and o have the same members.
func (r *Ring) Equal(o *Ring) bool {
	if r.Len() == 0 || o.Len() == 0 {
		return r.Len() == o.Len()
	}
	return slices.Equal(r.members, o.members)
}

// Owner returns the index in Members of the member that owns key, or -1
// when the ring is empty. key is a series key as samplers.AppendForwardedKey
// writes it (type, scope, name, sorted tags), so that every sender agrees
// on the owner of a series.
func (r *Ring) Owner(key []byte) int {
	return r.OwnerOfHash(KeyHash(key))
}

// OwnerOfHash is Owner for a key whose KeyHash is h, for callers that
// route many rings, or the same key more than once, with one hash.
func (r *Ring) OwnerOfHash(h uint64) int {
	if r == nil || len(r.hashes) == 0 {
		return -1
	}
	best, bestW := 0, fmix64(h^r.hashes[0])
	for i := 1; i < len(r.hashes); i++ {
		// Strictly greater: on a tie the member that sorts first keeps it.
		if w := fmix64(h ^ r.hashes[i]); w > bestW {
			best, bestW = i, w
		}
	}
	return best
}

// FNV-1a, 64 bits.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// KeyHash is the hash of a series key that ownership is decided on:
// 64-bit FNV-1a of the bytes, then fmix64. It is the same in every process
// and every version (it is part of the contract between the senders of a
// tier: changing it moves series between globals mid-upgrade), so it is
// never a seeded hash such as hash/maphash.
func KeyHash(key []byte) uint64 {
	h := uint64(fnvOffset64)
	for _, c := range key {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return fmix64(h)
}

// memberHash is the hash of a member's address: KeyHash of its bytes.
func memberHash(member string) uint64 {
	h := uint64(fnvOffset64)
	for i := 0; i < len(member); i++ {
		h ^= uint64(member[i])
		h *= fnvPrime64
	}
	return fmix64(h)
}

// fmix64 is a bijective 64-bit finalizer (the one of SplitMix64): every
// input bit changes each output bit with probability close to 1/2, so
// that FNV's weak high bits and the XOR of two hashes become uniform
// weights.
func fmix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
