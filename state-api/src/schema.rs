//! Structural schemas of state types: what a snapshot records about a key, namespace,
//! value or user key type, so that a restore can tell whether the stored bytes still
//! mean the same thing for the type that reads them.
//!
//! A [`Schema`] is derived from a type's serde structure ([`Schema::of`]), not from its
//! name: renaming or moving a type keeps its schema, while adding, removing, reordering
//! or retyping a field changes it. Field and variant names are part of the schema, type
//! names are not. The derivation traces the type's `Deserialize` implementation the way
//! postcard drives it, so every state type (which is `DeserializeOwned` anyway) has one
//! without deriving anything else.
//!
//! ```
//! use state_api::Schema;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Bid { auction: u64, price: u64 }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct RenamedBid { auction: u64, price: u64 }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct BidWithTime { auction: u64, price: u64, time: i64 }
//!
//! assert_eq!(Schema::of::<Bid>(), Schema::of::<RenamedBid>());
//! assert_ne!(Schema::of::<Bid>(), Schema::of::<BidWithTime>());
//! assert_eq!(Schema::of::<Bid>().to_string(), "struct { auction: u64, price: u64 }");
//! ```
//!
//! Types whose `Deserialize` cannot be traced (one that rejects the placeholder values
//! the tracer offers, or two different types of the same name inside one value, such as
//! two instances of one generic struct) get an
//! [`Schema::Opaque`] schema holding their type name, and restores compare the names,
//! as snapshots of format version 1 did. A descriptor can instead declare a schema of
//! its own ([`Schema::declared`]): an identifier and a version that the user bumps when
//! the type changes.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use crate::schema_encoding::FlatSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The structure of a state type, as its postcard encoding sees it.
///
/// Stored as a flat list of nodes ([`crate::raw::SCHEMA_MAX_DEPTH`] levels at most), so
/// decoding one from a damaged or foreign file is an error, never deep recursion.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "FlatSchema", try_from = "FlatSchema")]
#[non_exhaustive]
pub enum Schema {
    /// `()`.
    Unit,
    /// `bool`.
    Bool,
    /// `i8`.
    I8,
    /// `i16`.
    I16,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `i128`.
    I128,
    /// `u8`.
    U8,
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
    /// `char`.
    Char,
    /// A string.
    Str,
    /// A byte string (`serde_bytes`).
    Bytes,
    /// `Option<T>`.
    Option(Box<Schema>),
    /// A sequence (`Vec<T>`, `VecDeque<T>`, sets).
    Seq(Box<Schema>),
    /// A map (`HashMap`, `BTreeMap`).
    Map {
        /// The keys' schema.
        key: Box<Schema>,
        /// The values' schema.
        value: Box<Schema>,
    },
    /// A tuple.
    Tuple(Vec<Schema>),
    /// An array `[T; len]`.
    Array {
        /// The elements' schema.
        element: Box<Schema>,
        /// The length.
        len: u64,
    },
    /// A struct without fields.
    UnitStruct,
    /// A struct with one unnamed field.
    NewtypeStruct(Box<Schema>),
    /// A struct with unnamed fields.
    TupleStruct(Vec<Schema>),
    /// A struct with named fields, in declaration (encoding) order.
    Struct(Vec<Field>),
    /// An enum's variants, in index (encoding) order.
    Enum(Vec<Variant>),
    /// The enclosing struct or enum `depth` levels up (1 = the innermost): a recursive type.
    Recursive(u32),
    /// A schema declared by the user (see [`Schema::declared`]).
    Declared {
        /// The user's identifier of the type.
        id: String,
        /// The version, bumped by the user whenever the encoding changes.
        version: u32,
    },
    /// A type whose structure could not be traced, known by its type name only.
    Opaque {
        /// The type name (`std::any::type_name` or the name a descriptor pinned).
        type_name: String,
    },
}

/// A named field of a [`Schema::Struct`] or of a struct variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Field {
    /// The field name.
    pub name: String,
    /// The field's schema.
    pub schema: Schema,
}

/// A variant of a [`Schema::Enum`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variant {
    /// The variant name.
    pub name: String,
    /// What the variant holds.
    pub shape: VariantShape,
}

/// What an enum variant holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VariantShape {
    /// Nothing.
    Unit,
    /// One unnamed value.
    Newtype(Box<Schema>),
    /// Unnamed values.
    Tuple(Vec<Schema>),
    /// Named fields.
    Struct(Vec<Field>),
}

/// Why [`Schema::trace`] could not derive a structural schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the structure of `{type_name}` cannot be traced: {detail}")]
pub struct SchemaTraceError {
    /// The type.
    pub type_name: String,
    /// What went wrong.
    pub detail: String,
}

impl Schema {
    /// The schema of `T`: its traced structure, or [`Schema::Opaque`] with its type name
    /// when the structure cannot be traced. Cached per type.
    pub fn of<T: DeserializeOwned + 'static>() -> Schema {
        static CACHE: OnceLock<Mutex<HashMap<TypeId, Schema>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(s) = cache.lock().ok().and_then(|c| c.get(&TypeId::of::<T>()).cloned()) {
            return s;
        }
        let schema = Self::trace::<T>().unwrap_or_else(|_| Schema::Opaque {
            type_name: std::any::type_name::<T>().to_string(),
        });
        if let Ok(mut c) = cache.lock() {
            c.insert(TypeId::of::<T>(), schema.clone());
        }
        schema
    }

    /// Traces the structure of `T` (uncached), or says why it cannot.
    pub fn trace<T: DeserializeOwned>() -> Result<Schema, SchemaTraceError> {
        let err = |detail: String| SchemaTraceError {
            type_name: std::any::type_name::<T>().to_string(),
            detail,
        };
        crate::schema_trace::trace::<T>().map_err(|e| err(e.0))
    }

    /// A schema declared by the user for a type that cannot be traced, or whose
    /// compatibility the user wants to manage by hand: restores accept the state as is
    /// when `id` and `version` are equal, and otherwise need a migration.
    pub fn declared(id: impl Into<String>, version: u32) -> Schema {
        Schema::Declared { id: id.into(), version }
    }

    /// Whether this is a structural schema (not [`Schema::Opaque`] nor [`Schema::Declared`]).
    pub fn is_structural(&self) -> bool {
        !matches!(self, Schema::Opaque { .. } | Schema::Declared { .. })
    }

    /// Whether bytes written for `self` read as the same values through `new`: the
    /// schemas are equal, or `new` only appends variants to enums of `self` (postcard
    /// encodes a variant by its index, so the old variants keep their encoding).
    pub fn reads_as(&self, new: &Schema) -> bool {
        use Schema as S;
        match (self, new) {
            (S::Option(a), S::Option(b)) | (S::Seq(a), S::Seq(b)) | (S::NewtypeStruct(a), S::NewtypeStruct(b)) => {
                a.reads_as(b)
            }
            (S::Map { key: k1, value: v1 }, S::Map { key: k2, value: v2 }) => k1.reads_as(k2) && v1.reads_as(v2),
            (S::Tuple(a), S::Tuple(b)) | (S::TupleStruct(a), S::TupleStruct(b)) => all_read_as(a, b),
            (S::Array { element: a, len: l1 }, S::Array { element: b, len: l2 }) => l1 == l2 && a.reads_as(b),
            (S::Struct(a), S::Struct(b)) => fields_read_as(a, b),
            (S::Enum(old), S::Enum(new)) => {
                old.len() <= new.len()
                    && old.iter().zip(new).all(|(o, n)| {
                        o.name == n.name
                            && match (&o.shape, &n.shape) {
                                (VariantShape::Unit, VariantShape::Unit) => true,
                                (VariantShape::Newtype(a), VariantShape::Newtype(b)) => a.reads_as(b),
                                (VariantShape::Tuple(a), VariantShape::Tuple(b)) => all_read_as(a, b),
                                (VariantShape::Struct(a), VariantShape::Struct(b)) => fields_read_as(a, b),
                                _ => false,
                            }
                    })
            }
            _ => self == new,
        }
    }
}

fn all_read_as(a: &[Schema], b: &[Schema]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.reads_as(y))
}

fn fields_read_as(a: &[Field], b: &[Field]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.schema.reads_as(&y.schema))
}

fn list(f: &mut fmt::Formatter<'_>, items: &[Schema]) -> fmt::Result {
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{s}")?;
    }
    Ok(())
}

fn fields(f: &mut fmt::Formatter<'_>, fields: &[Field]) -> fmt::Result {
    f.write_str("{ ")?;
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{}: {}", field.name, field.schema)?;
    }
    f.write_str(" }")
}

/// Readable, Rust-like: `struct { id: u64, tags: Vec<string> }`, `enum { A, B(u32) }`.
impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Schema as S;
        let simple = match self {
            S::Unit => "()",
            S::Bool => "bool",
            S::I8 => "i8",
            S::I16 => "i16",
            S::I32 => "i32",
            S::I64 => "i64",
            S::I128 => "i128",
            S::U8 => "u8",
            S::U16 => "u16",
            S::U32 => "u32",
            S::U64 => "u64",
            S::U128 => "u128",
            S::F32 => "f32",
            S::F64 => "f64",
            S::Char => "char",
            S::Str => "string",
            S::Bytes => "bytes",
            S::UnitStruct => "struct",
            _ => "",
        };
        if !simple.is_empty() {
            return f.write_str(simple);
        }
        match self {
            S::Option(s) => write!(f, "Option<{s}>"),
            S::Seq(s) => write!(f, "Vec<{s}>"),
            S::Map { key, value } => write!(f, "Map<{key}, {value}>"),
            S::Tuple(items) => {
                f.write_str("(")?;
                list(f, items)?;
                f.write_str(")")
            }
            S::Array { element, len } => write!(f, "[{element}; {len}]"),
            S::NewtypeStruct(s) => write!(f, "struct({s})"),
            S::TupleStruct(items) => {
                f.write_str("struct(")?;
                list(f, items)?;
                f.write_str(")")
            }
            S::Struct(fs) => {
                f.write_str("struct ")?;
                fields(f, fs)
            }
            S::Enum(variants) => {
                f.write_str("enum { ")?;
                for (i, v) in variants.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    f.write_str(&v.name)?;
                    match &v.shape {
                        VariantShape::Unit => {}
                        VariantShape::Newtype(s) => write!(f, "({s})")?,
                        VariantShape::Tuple(items) => {
                            f.write_str("(")?;
                            list(f, items)?;
                            f.write_str(")")?;
                        }
                        VariantShape::Struct(fs) => {
                            f.write_str(" ")?;
                            fields(f, fs)?;
                        }
                    }
                }
                f.write_str(" }")
            }
            S::Recursive(depth) => write!(f, "<recursive {depth} up>"),
            S::Declared { id, version } => write!(f, "declared `{id}` version {version}"),
            S::Opaque { type_name } => write!(f, "`{type_name}` (untraced, by name)"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    enum Kind {
        A,
        B(u32),
        C { s: String },
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    enum KindMore {
        A,
        B(u32),
        C { s: String },
        D,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        kinds: Vec<Kind>,
        by_name: BTreeMap<String, Option<Kind>>,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct Tree {
        v: u32,
        kids: Vec<Tree>,
    }

    mod other {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub struct Kind {
            pub z: u8,
        }
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct Clash {
        a: Kind,
        b: other::Kind,
    }

    #[test]
    fn nested_enums_are_traced_with_every_variant() {
        let s = Schema::of::<Nested>();
        let text = s.to_string();
        assert_eq!(
            text,
            "struct { kinds: Vec<enum { A, B(u32), C { s: string } }>, \
             by_name: Map<string, Option<enum { A, B(u32), C { s: string } }>> }"
        );
    }

    #[test]
    fn recursion_is_a_back_reference() {
        assert_eq!(
            Schema::of::<Tree>().to_string(),
            "struct { v: u32, kids: Vec<<recursive 1 up>> }"
        );
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Untagged {
        A(u8),
        B(String),
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    enum Expr {
        Lit(i64),
        Neg(Box<Expr>),
        Add(Box<Expr>, Box<Expr>),
    }

    #[test]
    fn untraceable_types_fall_back_to_their_name() {
        assert!(Schema::trace::<Untagged>().is_err(), "postcard cannot store it either");
        assert!(matches!(
            Schema::of::<Untagged>(),
            Schema::Opaque { type_name } if type_name.ends_with("Untagged")
        ));
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct G<T> {
        t: T,
    }

    #[derive(Serialize, Deserialize)]
    #[allow(dead_code)]
    struct Pair {
        a: G<u8>,
        b: G<String>,
    }

    #[test]
    fn types_of_one_name_are_told_apart_or_fall_back() {
        // Two different types named `Kind` in one value: told apart by their field and
        // variant lists.
        assert_eq!(
            Schema::of::<Clash>().to_string(),
            "struct { a: enum { A, B(u32), C { s: string } }, b: struct { z: u8 } }"
        );
        // Two instances of one generic struct share its field list: either told apart
        // by their contents or known by name, never mixed up.
        let pair = Schema::of::<Pair>();
        if pair.is_structural() {
            assert_eq!(
                pair.to_string(),
                "struct { a: struct { t: u8 }, b: struct { t: string } }"
            );
        }
    }

    #[test]
    fn validating_std_types_and_recursive_enums_trace() {
        assert_eq!(Schema::of::<std::num::NonZeroU64>(), Schema::U64);
        assert_eq!(
            Schema::of::<Expr>().to_string(),
            "enum { Lit(i64), Neg(<recursive 1 up>), Add(<recursive 1 up>, <recursive 1 up>) }"
        );
        assert_eq!(
            Schema::of::<(Option<Vec<u8>>, [u16; 2], std::time::Duration)>().to_string(),
            "(Option<Vec<u8>>, (u16, u16), struct { secs: u64, nanos: u32 })"
        );
    }

    #[test]
    fn appended_variants_read_as_is_and_nothing_else_does() {
        let old = Schema::of::<Kind>();
        let new = Schema::of::<KindMore>();
        assert!(old.reads_as(&new));
        assert!(!new.reads_as(&old), "removing a variant does not");
        let wrapped = |s: Schema| Schema::Seq(Box::new(s));
        assert!(wrapped(old.clone()).reads_as(&wrapped(new.clone())));
        assert!(!Schema::U32.reads_as(&Schema::U64));
        assert!(Schema::declared("a", 1).reads_as(&Schema::declared("a", 1)));
        assert!(!Schema::declared("a", 1).reads_as(&Schema::declared("a", 2)));
    }

    #[test]
    fn schemas_round_trip_through_postcard() {
        let s = Schema::of::<Nested>();
        let bytes = postcard::to_stdvec(&s).unwrap();
        assert_eq!(postcard::from_bytes::<Schema>(&bytes).unwrap(), s);
    }
}
