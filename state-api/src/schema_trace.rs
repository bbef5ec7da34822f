//! Deriving a [`Schema`] from a type's `Deserialize` implementation: a serde
//! `Deserializer` that answers every request with a placeholder value and records what
//! was requested, the way postcard (a non-self-describing format) drives it.
//!
//! Enums are explored over several passes: each visit of an enum takes its next variant
//! in turn, so every variant, including those of enums nested in sequences, options, maps
//! and other variants, is seen. Containers (structs, enums) are recorded in a registry by
//! identity (name and the address of their static field or variant list); a container
//! met again inside itself is a recursion: its values are then cut short (empty
//! sequences, `None`), and the schema refers back to it.

use std::collections::HashMap;

use serde::de::{self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess, Visitor};

use crate::schema::{Field, Schema, Variant, VariantShape};

/// Passes over the type at most (each explores one more variant of every enum visit).
const MAX_PASSES: usize = 4096;
/// Nesting of containers at most while tracing.
const MAX_NESTING: usize = 128;

#[derive(Debug)]
pub(crate) struct TraceError(pub String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TraceError(msg.to_string())
    }
}

type R<T> = Result<T, TraceError>;

/// A container's identity: its name and the address of its static name list (or kind
/// and length for containers without one).
type Key = (&'static str, usize);

/// What a position holds, before containers are inlined.
#[derive(Debug, Clone, PartialEq)]
enum Draft {
    Unknown,
    Leaf(Schema),
    Option(Box<Draft>),
    Seq(Box<Draft>),
    Map(Box<Draft>, Box<Draft>),
    Tuple(Vec<Draft>),
    Ref(Key),
}

#[derive(Debug, Clone, PartialEq)]
enum VariantDraft {
    Unit,
    Newtype(Draft),
    Tuple(Vec<Draft>),
    Struct(Vec<(&'static str, Draft)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Container {
    UnitStruct,
    Newtype(Draft),
    TupleStruct(Vec<Draft>),
    Struct(Vec<(&'static str, Draft)>),
    Enum {
        variants: &'static [&'static str],
        shapes: Vec<Option<VariantDraft>>,
        visits: usize,
    },
}

#[derive(Default)]
struct Tracer {
    registry: HashMap<Key, Container>,
    /// Containers being traced, innermost last.
    stack: Vec<Key>,
    /// Inside a recursive occurrence: values are cut short and nothing is recorded.
    cut: usize,
}

impl Tracer {
    fn record(&mut self, key: Key, container: Container) -> R<()> {
        if self.cut > 0 {
            return Ok(());
        }
        match self.registry.get(&key) {
            Some(existing) if *existing != container => Err(TraceError(format!(
                "two different types named `{}` in one value",
                key.0
            ))),
            Some(_) => Ok(()),
            None => {
                self.registry.insert(key, container);
                Ok(())
            }
        }
    }

    /// Runs `f` inside container `key`; a container already being traced is a recursion.
    fn enter<T>(&mut self, key: Key, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        if self.stack.len() >= MAX_NESTING {
            return Err(TraceError(format!("nested deeper than {MAX_NESTING} containers")));
        }
        let recursive = self.stack.contains(&key);
        self.stack.push(key);
        if recursive {
            self.cut += 1;
        }
        let out = f(self);
        if recursive {
            self.cut -= 1;
        }
        self.stack.pop();
        out
    }

    fn incomplete(&self) -> bool {
        self.registry.values().any(|c| match c {
            Container::Enum { shapes, .. } => shapes.iter().any(Option::is_none),
            _ => false,
        })
    }
}

/// Traces `T` and returns its schema.
pub(crate) fn trace<T: de::DeserializeOwned>() -> R<Schema> {
    let mut tracer = Tracer::default();
    let mut root = Draft::Unknown;
    for _ in 0..MAX_PASSES {
        let mut draft = Draft::Unknown;
        T::deserialize(Tracing {
            tracer: &mut tracer,
            out: &mut draft,
        })?;
        root = draft;
        if !tracer.incomplete() {
            let mut stack = Vec::new();
            return inline(&root, &tracer.registry, &mut stack);
        }
    }
    let _ = root;
    Err(TraceError(format!(
        "enum variants still untraced after {MAX_PASSES} passes"
    )))
}

fn inline_all(drafts: &[Draft], reg: &HashMap<Key, Container>, stack: &mut Vec<Key>) -> R<Vec<Schema>> {
    drafts.iter().map(|d| inline(d, reg, stack)).collect()
}

fn inline_fields(
    fields: &[(&'static str, Draft)],
    reg: &HashMap<Key, Container>,
    stack: &mut Vec<Key>,
) -> R<Vec<Field>> {
    fields
        .iter()
        .map(|(name, d)| {
            Ok(Field {
                name: (*name).to_string(),
                schema: inline(d, reg, stack)?,
            })
        })
        .collect()
}

/// Turns a draft into a schema: containers inlined, recursion as back references.
fn inline(draft: &Draft, reg: &HashMap<Key, Container>, stack: &mut Vec<Key>) -> R<Schema> {
    Ok(match draft {
        Draft::Unknown => return Err(TraceError("a position was never traced".into())),
        Draft::Leaf(s) => s.clone(),
        Draft::Option(d) => Schema::Option(Box::new(inline(d, reg, stack)?)),
        Draft::Seq(d) => Schema::Seq(Box::new(inline(d, reg, stack)?)),
        Draft::Map(k, v) => Schema::Map {
            key: Box::new(inline(k, reg, stack)?),
            value: Box::new(inline(v, reg, stack)?),
        },
        Draft::Tuple(ds) => Schema::Tuple(inline_all(ds, reg, stack)?),
        Draft::Ref(key) => {
            if let Some(pos) = stack.iter().rposition(|k| k == key) {
                return Ok(Schema::Recursive((stack.len() - pos) as u32));
            }
            let container = reg
                .get(key)
                .ok_or_else(|| TraceError(format!("`{}` was never traced", key.0)))?;
            stack.push(*key);
            let schema = match container {
                Container::UnitStruct => Schema::UnitStruct,
                Container::Newtype(d) => Schema::NewtypeStruct(Box::new(inline(d, reg, stack)?)),
                Container::TupleStruct(ds) => Schema::TupleStruct(inline_all(ds, reg, stack)?),
                Container::Struct(fs) => Schema::Struct(inline_fields(fs, reg, stack)?),
                Container::Enum { variants, shapes, .. } => {
                    let mut out = Vec::with_capacity(variants.len());
                    for (name, shape) in variants.iter().zip(shapes) {
                        let shape = match shape {
                            None => return Err(TraceError(format!("variant `{name}` was never traced"))),
                            Some(VariantDraft::Unit) => VariantShape::Unit,
                            Some(VariantDraft::Newtype(d)) => VariantShape::Newtype(Box::new(inline(d, reg, stack)?)),
                            Some(VariantDraft::Tuple(ds)) => VariantShape::Tuple(inline_all(ds, reg, stack)?),
                            Some(VariantDraft::Struct(fs)) => VariantShape::Struct(inline_fields(fs, reg, stack)?),
                        };
                        out.push(Variant {
                            name: (*name).to_string(),
                            shape,
                        });
                    }
                    Schema::Enum(out)
                }
            };
            stack.pop();
            schema
        }
    })
}

/// The deserializer of one position: records into `out` what the type asks for.
struct Tracing<'t> {
    tracer: &'t mut Tracer,
    out: &'t mut Draft,
}

macro_rules! leaf {
    ($($method:ident => $schema:ident, $visit:ident($value:expr);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
                *self.out = Draft::Leaf(Schema::$schema);
                visitor.$visit($value)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Tracing<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(TraceError(
            "the type needs a self-describing format (`deserialize_any`), which postcard is not".into(),
        ))
    }

    // Numbers are 1, not 0, so that `NonZero*` types trace.
    leaf! {
        deserialize_bool => Bool, visit_bool(false);
        deserialize_i8 => I8, visit_i8(1);
        deserialize_i16 => I16, visit_i16(1);
        deserialize_i32 => I32, visit_i32(1);
        deserialize_i64 => I64, visit_i64(1);
        deserialize_i128 => I128, visit_i128(1);
        deserialize_u8 => U8, visit_u8(1);
        deserialize_u16 => U16, visit_u16(1);
        deserialize_u32 => U32, visit_u32(1);
        deserialize_u64 => U64, visit_u64(1);
        deserialize_u128 => U128, visit_u128(1);
        deserialize_f32 => F32, visit_f32(1.0);
        deserialize_f64 => F64, visit_f64(1.0);
        deserialize_char => Char, visit_char('a');
        deserialize_str => Str, visit_str("");
        deserialize_string => Str, visit_string(String::new());
        deserialize_bytes => Bytes, visit_bytes(&[]);
        deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        *self.out = Draft::Leaf(Schema::Unit);
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        let mut inner = Draft::Unknown;
        let value = if self.tracer.cut > 0 {
            visitor.visit_none()?
        } else {
            visitor.visit_some(Tracing {
                tracer: &mut *self.tracer,
                out: &mut inner,
            })?
        };
        *self.out = Draft::Option(Box::new(inner));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> R<V::Value> {
        let key = (name, 0);
        self.tracer.record(key, Container::UnitStruct)?;
        *self.out = Draft::Ref(key);
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> R<V::Value> {
        let key = (name, 1);
        let mut inner = Draft::Unknown;
        let value = self.tracer.enter(key, |t| {
            let v = visitor.visit_newtype_struct(Tracing {
                tracer: t,
                out: &mut inner,
            })?;
            t.record(key, Container::Newtype(inner))?;
            Ok(v)
        })?;
        *self.out = Draft::Ref(key);
        Ok(value)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        let len = usize::from(self.tracer.cut == 0);
        let (value, mut drafts) = elements(&mut *self.tracer, len, visitor)?;
        *self.out = Draft::Seq(Box::new(drafts.pop().unwrap_or(Draft::Unknown)));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> R<V::Value> {
        let (value, drafts) = elements(&mut *self.tracer, len, visitor)?;
        *self.out = Draft::Tuple(drafts);
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, name: &'static str, len: usize, visitor: V) -> R<V::Value> {
        let key = (name, 2 + len);
        let value = self.tracer.enter(key, |t| {
            let (v, drafts) = elements(&mut *t, len, visitor)?;
            t.record(key, Container::TupleStruct(drafts))?;
            Ok(v)
        })?;
        *self.out = Draft::Ref(key);
        Ok(value)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> R<V::Value> {
        let (mut k, mut v) = (Draft::Unknown, Draft::Unknown);
        let value = visitor.visit_map(Entries {
            left: usize::from(self.tracer.cut == 0),
            tracer: &mut *self.tracer,
            key: &mut k,
            value: &mut v,
        })?;
        *self.out = Draft::Map(Box::new(k), Box::new(v));
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        let key = (name, fields.as_ptr() as usize);
        let value = self.tracer.enter(key, |t| {
            let (v, drafts) = elements(&mut *t, fields.len(), visitor)?;
            t.record(key, Container::Struct(fields.iter().copied().zip(drafts).collect()))?;
            Ok(v)
        })?;
        *self.out = Draft::Ref(key);
        Ok(value)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> R<V::Value> {
        if variants.is_empty() {
            return Err(TraceError(format!("enum `{name}` has no variants")));
        }
        let key = (name, variants.as_ptr() as usize);
        let value = self.tracer.enter(key, |t| {
            // Each visit takes the next variant in turn (the first inside a recursion).
            let index = if t.cut > 0 {
                0
            } else {
                let entry = t.registry.entry(key).or_insert_with(|| Container::Enum {
                    variants,
                    shapes: vec![None; variants.len()],
                    visits: 0,
                });
                match entry {
                    Container::Enum { visits, .. } => {
                        *visits += 1;
                        (*visits - 1) % variants.len()
                    }
                    _ => return Err(TraceError(format!("two different types named `{name}` in one value"))),
                }
            };
            let mut shape = VariantDraft::Unit;
            let v = visitor.visit_enum(Choice {
                tracer: &mut *t,
                name: variants[index],
                shape: &mut shape,
            })?;
            if t.cut == 0
                && let Some(Container::Enum { shapes, .. }) = t.registry.get_mut(&key)
            {
                match &shapes[index] {
                    Some(existing) if *existing != shape => {
                        return Err(TraceError(format!(
                            "variant `{}` of `{name}` traced two ways",
                            variants[index]
                        )));
                    }
                    Some(_) => {}
                    None => shapes[index] = Some(shape),
                }
            }
            Ok(v)
        })?;
        *self.out = Draft::Ref(key);
        Ok(value)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(TraceError("an identifier outside an enum".into()))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> R<V::Value> {
        Err(TraceError(
            "`deserialize_ignored_any` needs a self-describing format".into(),
        ))
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Visits `len` elements (a sequence, tuple, struct or variant) and returns the value
/// and what each element held.
fn elements<'de, V: Visitor<'de>>(tracer: &mut Tracer, len: usize, visitor: V) -> R<(V::Value, Vec<Draft>)> {
    let mut drafts = vec![Draft::Unknown; len];
    let value = visitor.visit_seq(Elements {
        tracer,
        outs: drafts.iter_mut(),
    })?;
    Ok((value, drafts))
}

/// The elements of a sequence, tuple or struct, one position each.
struct Elements<'t, I> {
    tracer: &'t mut Tracer,
    outs: I,
}

impl<'de, 'a, I: Iterator<Item = &'a mut Draft>> SeqAccess<'de> for Elements<'_, I> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> R<Option<T::Value>> {
        match self.outs.next() {
            Some(out) => seed
                .deserialize(Tracing {
                    tracer: &mut *self.tracer,
                    out,
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

/// One entry of a map (none inside a recursion).
struct Entries<'t> {
    tracer: &'t mut Tracer,
    left: usize,
    key: &'t mut Draft,
    value: &'t mut Draft,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> R<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Tracing {
            tracer: &mut *self.tracer,
            out: &mut *self.key,
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> R<V::Value> {
        seed.deserialize(Tracing {
            tracer: &mut *self.tracer,
            out: &mut *self.value,
        })
    }
}

/// The variant an enum visit takes.
struct Choice<'t> {
    tracer: &'t mut Tracer,
    name: &'static str,
    shape: &'t mut VariantDraft,
}

impl<'de, 't> EnumAccess<'de> for Choice<'t> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> R<(S::Value, Self)> {
        let de: de::value::StrDeserializer<'_, TraceError> = self.name.into_deserializer();
        let tag = seed.deserialize(de)?;
        Ok((tag, self))
    }
}

impl<'de> VariantAccess<'de> for Choice<'_> {
    type Error = TraceError;

    fn unit_variant(self) -> R<()> {
        *self.shape = VariantDraft::Unit;
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> R<S::Value> {
        let mut inner = Draft::Unknown;
        let v = seed.deserialize(Tracing {
            tracer: &mut *self.tracer,
            out: &mut inner,
        })?;
        *self.shape = VariantDraft::Newtype(inner);
        Ok(v)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> R<V::Value> {
        let (v, drafts) = elements(&mut *self.tracer, len, visitor)?;
        *self.shape = VariantDraft::Tuple(drafts);
        Ok(v)
    }

    fn struct_variant<V: Visitor<'de>>(self, fields: &'static [&'static str], visitor: V) -> R<V::Value> {
        let (v, drafts) = elements(&mut *self.tracer, fields.len(), visitor)?;
        *self.shape = VariantDraft::Struct(fields.iter().copied().zip(drafts).collect());
        Ok(v)
    }
}
