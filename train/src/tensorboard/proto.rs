//! The few protobuf messages of TensorBoard's event files, encoded and decoded by hand.
//!
//! Field numbers are TensorBoard's (`tensorboard/compat/proto/event.proto`, `summary.proto`,
//! `tensor.proto`, `plugins/hparams/plugin_data.proto`, `google/protobuf/struct.proto`). Fields
//! are written in field-number order and defaults are omitted, as protobuf's own serializers do,
//! so our bytes equal Python's (checked against `tests/fixtures/gen_tensorboard.py`).

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A protobuf message being written.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Pb(pub(crate) Vec<u8>);

impl Pb {
    pub(crate) fn new() -> Self {
        Pb(Vec::new())
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    /// An int64, int32 or enum field (negative values take ten bytes, as protobuf writes them).
    pub(crate) fn int(mut self, field: u32, v: i64) -> Self {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v as u64);
        }
        self
    }

    pub(crate) fn double(mut self, field: u32, v: f64) -> Self {
        // proto3 omits a zero; -0.0 has a sign bit, so it is written, as protobuf does.
        if v.to_bits() != 0 {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// A float field inside a `oneof`: written even when zero (its presence is the choice).
    pub(crate) fn float_present(mut self, field: u32, v: f32) -> Self {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A double field inside a `oneof`, written even when zero.
    pub(crate) fn double_present(mut self, field: u32, v: f64) -> Self {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A bool field inside a `oneof`, written even when false.
    pub(crate) fn bool_present(mut self, field: u32, v: bool) -> Self {
        self.key(field, VARINT);
        self.varint(u64::from(v));
        self
    }

    pub(crate) fn bytes(mut self, field: u32, v: &[u8]) -> Self {
        if !v.is_empty() {
            self = self.bytes_present(field, v);
        }
        self
    }

    /// A length-delimited field written even when empty (a submessage that is set).
    pub(crate) fn bytes_present(mut self, field: u32, v: &[u8]) -> Self {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub(crate) fn string(self, field: u32, v: &str) -> Self {
        self.bytes(field, v.as_bytes())
    }

    /// A set submessage (written even when empty).
    pub(crate) fn message(self, field: u32, m: &Pb) -> Self {
        self.bytes_present(field, &m.0)
    }

    /// A packed repeated double.
    pub(crate) fn packed_doubles(mut self, field: u32, v: &[f64]) -> Self {
        if !v.is_empty() {
            self.key(field, LEN);
            self.varint(8 * v.len() as u64);
            for x in v {
                self.0.extend_from_slice(&x.to_le_bytes());
            }
        }
        self
    }
}

/// One field of a decoded message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Field<'b> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(&'b [u8]),
}

impl<'b> Field<'b> {
    pub(crate) fn as_f64(&self) -> Option<f64> {
        match *self {
            Field::Fixed64(b) => Some(f64::from_bits(b)),
            _ => None,
        }
    }
    pub(crate) fn as_f32(&self) -> Option<f32> {
        match *self {
            Field::Fixed32(b) => Some(f32::from_bits(b)),
            _ => None,
        }
    }
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match *self {
            Field::Varint(v) => Some(v as i64),
            _ => None,
        }
    }
    pub(crate) fn as_bytes(&self) -> Option<&'b [u8]> {
        match *self {
            Field::Len(b) => Some(b),
            _ => None,
        }
    }
    pub(crate) fn as_str(&self) -> Option<&'b str> {
        std::str::from_utf8(self.as_bytes()?).ok()
    }
    /// A packed repeated double (or a single unpacked one).
    pub(crate) fn as_doubles(&self) -> Option<Vec<f64>> {
        match *self {
            Field::Len(b) if b.len() % 8 == 0 => {
                Some(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
            }
            Field::Fixed64(b) => Some(vec![f64::from_bits(b)]),
            _ => None,
        }
    }
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of a message, `(number, value)` in order; `None` if the bytes are not a
/// well-formed message.
pub(crate) fn fields(bytes: &[u8]) -> Option<Vec<(u32, Field<'_>)>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let key = read_varint(bytes, &mut at)?;
        let (field, wire) = (u32::try_from(key >> 3).ok()?, (key & 7) as u8);
        let value = match wire {
            VARINT => Field::Varint(read_varint(bytes, &mut at)?),
            FIXED64 => {
                let b = bytes.get(at..at + 8)?;
                at += 8;
                Field::Fixed64(u64::from_le_bytes(b.try_into().ok()?))
            }
            FIXED32 => {
                let b = bytes.get(at..at + 4)?;
                at += 4;
                Field::Fixed32(u32::from_le_bytes(b.try_into().ok()?))
            }
            LEN => {
                let len = usize::try_from(read_varint(bytes, &mut at)?).ok()?;
                let b = bytes.get(at..at.checked_add(len)?)?;
                at += len;
                Field::Len(b)
            }
            _ => return None,
        };
        out.push((field, value));
    }
    Some(out)
}

/// The last value of field `n` (protobuf's rule for a repeated non-repeated field).
pub(crate) fn get<'f, 'b>(fields: &'f [(u32, Field<'b>)], n: u32) -> Option<&'f Field<'b>> {
    fields.iter().rev().find(|(f, _)| *f == n).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_decodes_every_wire_type() {
        let inner = Pb::new().string(1, "tag").float_present(2, 0.0);
        let m = Pb::new()
            .double(1, 1.5)
            .int(2, -3)
            .int(3, 300)
            .message(5, &inner)
            .packed_doubles(6, &[1.0, -2.0])
            .bytes_present(7, &[]);
        let f = fields(&m.0).unwrap();
        assert_eq!(get(&f, 1).unwrap().as_f64(), Some(1.5));
        assert_eq!(get(&f, 2).unwrap().as_i64(), Some(-3));
        assert_eq!(get(&f, 3).unwrap().as_i64(), Some(300));
        let inner_f = fields(get(&f, 5).unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(get(&inner_f, 1).unwrap().as_str(), Some("tag"));
        assert_eq!(get(&inner_f, 2).unwrap().as_f32(), Some(0.0));
        assert_eq!(get(&f, 6).unwrap().as_doubles(), Some(vec![1.0, -2.0]));
        assert_eq!(get(&f, 7).unwrap().as_bytes(), Some(&[][..]));
        // Defaults are omitted; 300 is the two-byte varint ac 02.
        assert_eq!(Pb::new().int(1, 0).double(2, 0.0).string(3, "").0, Vec::<u8>::new());
        assert_eq!(Pb::new().int(1, 300).0, vec![0x08, 0xac, 0x02]);
        // Truncated input is refused, not read past.
        assert!(fields(&m.0[..m.0.len() - 1]).is_none());
        assert!(fields(&[0x0a, 0x05, 1]).is_none());
    }
}
