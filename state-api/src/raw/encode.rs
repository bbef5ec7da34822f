//! Postcard encoding appended to a reused buffer, without a `memcpy` call per field.
//!
//! `postcard::to_extend` copies each encoded field (a varint is 1–10 bytes) with
//! `Vec::extend_from_slice`, which calls the C library's `memcpy`. For a few bytes that
//! call costs more than the encoding: profiled in release, it was a fifth of a heap
//! `set_current_key` + `list.add` with `i64` keys. Short fields are pushed byte by byte
//! here; the bytes are the same as postcard's.

use postcard::ser_flavors::Flavor;
use serde::Serialize;

/// Fields up to this many bytes are pushed byte by byte, longer ones copied at once.
const SHORT: usize = 16;

/// Appends `data` to `buf`: byte by byte when short, else with one copy.
#[inline]
pub(crate) fn append_bytes(buf: &mut Vec<u8>, data: &[u8]) {
    if data.len() <= SHORT {
        buf.reserve(data.len());
        for &b in data {
            buf.push(b);
        }
    } else {
        buf.extend_from_slice(data);
    }
}

/// A postcard flavor appending to a borrowed `Vec`.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl Flavor for AppendTo<'_> {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        append_bytes(self.0, data);
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends the postcard encoding of `value` to `buf` (the same bytes as
/// `postcard::to_extend`). On an error, `buf` may hold part of the encoding.
///
/// ```
/// let mut buf = vec![9];
/// state_api::raw::append_postcard(&(-3i64, "ab"), &mut buf).unwrap();
/// assert_eq!(buf, [&[9][..], &postcard::to_stdvec(&(-3i64, "ab")).unwrap()].concat());
/// ```
#[inline]
pub fn append_postcard<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> postcard::Result<()> {
    postcard::serialize_with_flavor(value, AppendTo(buf))
}

#[cfg(test)]
mod tests {
    use super::append_postcard;

    #[test]
    fn appends_the_same_bytes_as_postcard() {
        let long = "x".repeat(40);
        let cases: Vec<Vec<u8>> = vec![
            postcard::to_stdvec(&0u8).unwrap(),
            postcard::to_stdvec(&i64::MIN).unwrap(),
            postcard::to_stdvec(&u128::MAX).unwrap(),
            postcard::to_stdvec(&(1u32, "name", Some(2.5f64))).unwrap(),
            postcard::to_stdvec(&long).unwrap(),
            postcard::to_stdvec(&vec![7u16; 300]).unwrap(),
        ];
        let mut buf = vec![0xAA];
        append_postcard(&0u8, &mut buf).unwrap();
        append_postcard(&i64::MIN, &mut buf).unwrap();
        append_postcard(&u128::MAX, &mut buf).unwrap();
        append_postcard(&(1u32, "name", Some(2.5f64)), &mut buf).unwrap();
        append_postcard(&long, &mut buf).unwrap();
        append_postcard(&vec![7u16; 300], &mut buf).unwrap();
        let want: Vec<u8> = std::iter::once(0xAA).chain(cases.into_iter().flatten()).collect();
        assert_eq!(buf, want);
    }
}
