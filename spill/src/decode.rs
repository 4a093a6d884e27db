//! Decoding a record's payload without believing a length prefix beyond what the record can hold.
//!
//! A postcard payload announces each sequence's and map's length before its elements, and serde's
//! collection visitors preallocate from that announcement (up to 1 MiB each). A record of a few
//! bytes that claims a map of 2^40 entries would make the decode allocate a megabyte before it
//! finds the bytes missing. [`decode`] passes every visitor a size hint of at most the record's own
//! length (every element takes at least one byte of it, except zero-sized ones, which allocate
//! nothing): what a collection preallocates is bounded by the record, and a claim the bytes cannot
//! back fails as a decode error, which the reader treats as corruption ([`OnCorruption`]).
//! Postcard itself already checks string and byte lengths against the remaining bytes.
//!
//! [`OnCorruption`]: crate::OnCorruption

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Decodes `payload` as postcard, every collection's preallocation bounded by `payload.len()`.
#[inline]
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(payload: &'de [u8]) -> postcard::Result<T> {
    let mut postcard = postcard::Deserializer::from_bytes(payload);
    T::deserialize(Capped {
        inner: &mut postcard,
        cap: payload.len(),
    })
}

/// A deserializer whose visitors see size hints of at most `cap`.
struct Capped<D> {
    inner: D,
    cap: usize,
}

/// Wraps what a visitor receives, so that nested collections are capped too.
struct CappedVisitor<V> {
    inner: V,
    cap: usize,
}

struct CappedSeed<S> {
    inner: S,
    cap: usize,
}

struct CappedAccess<A> {
    inner: A,
    cap: usize,
}

impl<A> CappedAccess<A> {
    fn hint(&self, hint: Option<usize>) -> Option<usize> {
        hint.filter(|&n| n <= self.cap)
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        #[inline]
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method($($arg,)* CappedVisitor { inner: visitor, cap: self.cap })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Capped<D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(),
        deserialize_i32(), deserialize_i64(), deserialize_i128(), deserialize_u8(),
        deserialize_u16(), deserialize_u32(), deserialize_u64(), deserialize_u128(),
        deserialize_f32(), deserialize_f64(), deserialize_char(), deserialize_str(),
        deserialize_string(), deserialize_bytes(), deserialize_byte_buf(), deserialize_option(),
        deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(),
        deserialize_tuple(len: usize), deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(), deserialize_struct(name: &'static str, fields: &'static [&'static str]),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        #[inline]
        fn $method<E: de::Error>(self, $($arg: $ty),*) -> Result<V::Value, E> {
            self.inner.$method($($arg),*)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for CappedVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_visit! {
        visit_bool(v: bool), visit_i8(v: i8), visit_i16(v: i16), visit_i32(v: i32),
        visit_i64(v: i64), visit_i128(v: i128), visit_u8(v: u8), visit_u16(v: u16),
        visit_u32(v: u32), visit_u64(v: u64), visit_u128(v: u128), visit_f32(v: f32),
        visit_f64(v: f64), visit_char(v: char), visit_str(v: &str),
        visit_borrowed_str(v: &'de str), visit_string(v: String), visit_bytes(v: &[u8]),
        visit_borrowed_bytes(v: &'de [u8]), visit_byte_buf(v: Vec<u8>), visit_none(),
        visit_unit(),
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Capped {
            inner: deserializer,
            cap: self.cap,
        })
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Capped {
            inner: deserializer,
            cap: self.cap,
        })
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(CappedAccess {
            inner: seq,
            cap: self.cap,
        })
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(CappedAccess {
            inner: map,
            cap: self.cap,
        })
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(CappedAccess {
            inner: data,
            cap: self.cap,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for CappedSeed<S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Capped {
            inner: deserializer,
            cap: self.cap,
        })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for CappedAccess<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        let cap = self.cap;
        self.inner
            .next_element_seed(CappedSeed { inner: seed, cap })
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.hint(self.inner.size_hint())
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for CappedAccess<A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let cap = self.cap;
        self.inner.next_key_seed(CappedSeed { inner: seed, cap })
    }

    #[inline]
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        let cap = self.cap;
        self.inner.next_value_seed(CappedSeed { inner: seed, cap })
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.hint(self.inner.size_hint())
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for CappedAccess<A> {
    type Error = A::Error;
    type Variant = CappedAccess<A::Variant>;

    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let cap = self.cap;
        let (value, variant) = self.inner.variant_seed(CappedSeed { inner: seed, cap })?;
        Ok((
            value,
            CappedAccess {
                inner: variant,
                cap,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for CappedAccess<A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        let cap = self.cap;
        self.inner
            .newtype_variant_seed(CappedSeed { inner: seed, cap })
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let cap = self.cap;
        self.inner.tuple_variant(
            len,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let cap = self.cap;
        self.inner.struct_variant(
            fields,
            CappedVisitor {
                inner: visitor,
                cap,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    use super::decode;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        Newtype(Vec<u16>),
        Tuple(u8, Option<String>),
        Struct { map: BTreeMap<String, Vec<u8>> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Item {
        id: u64,
        name: String,
        bytes: Vec<u8>,
        shapes: Vec<Shape>,
        index: HashMap<u32, (i64, f64)>,
        nested: Option<Box<Item>>,
        unit: (),
        big: (i128, u128, char, bool),
    }

    #[test]
    fn decodes_what_postcard_decodes() {
        let inner = Item {
            id: 1,
            name: "inner".into(),
            bytes: vec![],
            shapes: vec![Shape::Unit],
            index: HashMap::new(),
            nested: None,
            unit: (),
            big: (-1, 2, 'x', false),
        };
        let item = Item {
            id: 7,
            name: "héllo".into(),
            bytes: vec![1, 2, 3],
            shapes: vec![
                Shape::Unit,
                Shape::Newtype(vec![1, 500, 65535]),
                Shape::Tuple(9, Some("t".into())),
                Shape::Struct {
                    map: [("k".to_owned(), vec![4u8])].into(),
                },
            ],
            index: [(3, (-4, 0.5)), (5, (6, -1.25))].into(),
            nested: Some(Box::new(inner)),
            unit: (),
            big: (i128::MIN, u128::MAX, 'λ', true),
        };
        let bytes = postcard::to_allocvec(&item).unwrap();
        assert_eq!(decode::<Item>(&bytes).unwrap(), item);
        assert_eq!(
            decode::<Item>(&bytes).unwrap(),
            postcard::from_bytes::<Item>(&bytes).unwrap()
        );
    }

    #[test]
    fn a_length_the_record_cannot_hold_is_an_error() {
        // A map of 2^40 entries announced in six bytes.
        let mut bytes = Vec::new();
        let mut n: u64 = 1 << 40;
        while n >= 0x80 {
            bytes.push((n as u8) | 0x80);
            n >>= 7;
        }
        bytes.push(n as u8);
        assert!(decode::<HashMap<u64, u64>>(&bytes).is_err());
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }
}
