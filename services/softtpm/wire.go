package softtpm

import "encoding/binary"

// reader takes TPM wire values (big-endian integers, TPM2B size-prefixed buffers) off a
// command. A read past the end sets short and yields zero values, so that a handler parses a
// whole parameter and checks once, the way the reference implementation's unmarshal functions
// return TPM_RC_INSUFFICIENT.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) take(n int) []byte {
	if r.short || n < 0 || len(r.b) < n {
		r.short = true
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8 {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

// tpm2b reads a TPM2B: a uint16 size and that many bytes. The result is never nil when the
// read succeeded, so that "present but empty" and "short" stay distinguishable.
func (r *reader) tpm2b() []byte {
	n := r.u16()
	if r.short {
		return nil
	}
	if n == 0 {
		return []byte{}
	}
	return r.take(int(n))
}

func (r *reader) empty() bool { return len(r.b) == 0 }

// writer builds a response.
type writer struct{ b []byte }

func (w *writer) u8(v uint8)     { w.b = append(w.b, v) }
func (w *writer) u16(v uint16)   { w.b = binary.BigEndian.AppendUint16(w.b, v) }
func (w *writer) u32(v uint32)   { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64)   { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) raw(v []byte)   { w.b = append(w.b, v...) }
func (w *writer) tpm2b(v []byte) { w.u16(uint16(len(v))); w.b = append(w.b, v...) }

// sized writes a TPM2B whose content is what fill writes (TPM2B_PUBLIC, TPM2B_ATTEST, ...).
func (w *writer) sized(fill func(w *writer)) {
	at := len(w.b)
	w.u16(0)
	fill(w)
	binary.BigEndian.PutUint16(w.b[at:], uint16(len(w.b)-at-2))
}

// marshal returns what fill writes.
func marshal(fill func(w *writer)) []byte {
	var w writer
	fill(&w)
	return w.b
}
