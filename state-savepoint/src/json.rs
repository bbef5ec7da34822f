//! Decoding canonical (postcard) bytes into JSON by a stored [`Schema`], so that state
//! can be dumped without the Rust types that wrote it. Where the schema is not
//! structural (a declared or untraced type) the bytes are given as hex.

use serde_json::{Map, Number, Value, json};
use state_api::{Schema, VariantShape};

/// Why bytes did not decode by their schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

type R<T> = Result<T, DecodeError>;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON form of one value's bytes: decoded by `schema` when it is structural and the
/// bytes decode exactly, else `{"hex": "…"}`.
pub fn to_json(schema: &Schema, bytes: &[u8]) -> Value {
    if schema.is_structural() {
        let mut input = bytes;
        let mut stack = Vec::new();
        if let Ok(v) = decode(schema, &mut input, &mut stack)
            && input.is_empty()
        {
            return v;
        }
    }
    json!({ "hex": hex(bytes) })
}

/// How many leading bytes of `bytes` one value of `schema` takes, or `None` when the
/// schema is not structural or the bytes do not decode (used to split concatenated
/// encodings, such as RocksDB's key + namespace keys).
pub fn encoded_len(schema: &Schema, bytes: &[u8]) -> Option<usize> {
    if !schema.is_structural() {
        return None;
    }
    let mut input = bytes;
    decode(schema, &mut input, &mut Vec::new()).ok()?;
    Some(bytes.len() - input.len())
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> R<&'a [u8]> {
    if input.len() < n {
        return Err(DecodeError("runs past the end".into()));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn varint(input: &mut &[u8]) -> R<u128> {
    let mut v: u128 = 0;
    for shift in (0..128).step_by(7) {
        let b = take(input, 1)?[0];
        v |= u128::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError("varint too long".into()))
}

fn zigzag(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

fn number_u(v: u128) -> Value {
    u64::try_from(v).map_or_else(|_| Value::String(v.to_string()), |n| Value::Number(n.into()))
}

fn number_i(v: i128) -> Value {
    i64::try_from(v).map_or_else(|_| Value::String(v.to_string()), |n| Value::Number(n.into()))
}

fn len(input: &mut &[u8]) -> R<usize> {
    let n = usize::try_from(varint(input)?).map_err(|_| DecodeError("length too large".into()))?;
    // Every element takes at least one byte, except zero-sized ones: bound by the input.
    if n > input.len() {
        return Err(DecodeError("length beyond the bytes".into()));
    }
    Ok(n)
}

/// Decodes one value; `stack` holds the enclosing structs and enums (the containers a
/// [`Schema::Recursive`] counts).
fn decode<'s>(schema: &'s Schema, input: &mut &[u8], stack: &mut Vec<&'s Schema>) -> R<Value> {
    if stack.len() > 256 {
        return Err(DecodeError("nested too deeply".into()));
    }
    use Schema as S;
    Ok(match schema {
        S::Unit | S::UnitStruct => Value::Null,
        S::Bool => match take(input, 1)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(DecodeError(format!("bool byte {b}"))),
        },
        S::U8 => Value::Number(take(input, 1)?[0].into()),
        S::I8 => Value::Number((take(input, 1)?[0] as i8).into()),
        S::U16 | S::U32 | S::U64 | S::U128 => number_u(varint(input)?),
        S::I16 | S::I32 | S::I64 | S::I128 => number_i(zigzag(varint(input)?)),
        S::F32 => {
            let b = take(input, 4)?;
            let f = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number)
        }
        S::F64 => {
            let b = take(input, 8)?;
            let f = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        S::Char | S::Str => {
            let n = len(input)?;
            let b = take(input, n)?;
            Value::String(
                std::str::from_utf8(b)
                    .map_err(|e| DecodeError(e.to_string()))?
                    .to_string(),
            )
        }
        S::Bytes => {
            let n = len(input)?;
            Value::String(hex(take(input, n)?))
        }
        S::Option(inner) => match take(input, 1)?[0] {
            0 => Value::Null,
            1 => decode(inner, input, stack)?,
            b => return Err(DecodeError(format!("option tag {b}"))),
        },
        S::Seq(inner) => {
            let n = len(input)?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                out.push(decode(inner, input, stack)?);
            }
            Value::Array(out)
        }
        S::Map { key, value } => {
            let n = len(input)?;
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let k = decode(key, input, stack)?;
                let v = decode(value, input, stack)?;
                out.push(Value::Array(vec![k, v]));
            }
            Value::Array(out)
        }
        S::Tuple(items) => Value::Array(items.iter().map(|s| decode(s, input, stack)).collect::<R<Vec<_>>>()?),
        S::TupleStruct(items) => {
            stack.push(schema);
            let out = items.iter().map(|s| decode(s, input, stack)).collect::<R<Vec<_>>>();
            stack.pop();
            Value::Array(out?)
        }
        S::Array { element, len } => {
            let mut out = Vec::new();
            for _ in 0..*len {
                out.push(decode(element, input, stack)?);
            }
            Value::Array(out)
        }
        S::NewtypeStruct(inner) => {
            stack.push(schema);
            let v = decode(inner, input, stack);
            stack.pop();
            v?
        }
        S::Struct(fields) => {
            stack.push(schema);
            let mut out = Map::new();
            let mut result = Ok(());
            for f in fields {
                match decode(&f.schema, input, stack) {
                    Ok(v) => {
                        out.insert(f.name.clone(), v);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            stack.pop();
            result?;
            Value::Object(out)
        }
        S::Enum(variants) => {
            let index = usize::try_from(varint(input)?).map_err(|_| DecodeError("variant index".into()))?;
            let variant = variants
                .get(index)
                .ok_or_else(|| DecodeError(format!("variant {index} of {}", variants.len())))?;
            stack.push(schema);
            let content = match &variant.shape {
                VariantShape::Unit => Ok(None),
                VariantShape::Newtype(s) => decode(s, input, stack).map(Some),
                VariantShape::Tuple(items) => items
                    .iter()
                    .map(|s| decode(s, input, stack))
                    .collect::<R<Vec<_>>>()
                    .map(|v| Some(Value::Array(v))),
                VariantShape::Struct(fields) => fields
                    .iter()
                    .map(|f| decode(&f.schema, input, stack).map(|v| (f.name.clone(), v)))
                    .collect::<R<Map<_, _>>>()
                    .map(|m| Some(Value::Object(m))),
            };
            stack.pop();
            match content? {
                None => Value::String(variant.name.clone()),
                Some(v) => json!({ variant.name.clone(): v }),
            }
        }
        S::Recursive(depth) => {
            let depth = *depth as usize;
            let target = stack
                .len()
                .checked_sub(depth)
                .and_then(|i| stack.get(i).copied())
                .ok_or_else(|| DecodeError("recursion beyond the outermost type".into()))?;
            decode(target, input, stack)?
        }
        _ => return Err(DecodeError("not a structural schema".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle { r: f64 },
        Poly(Vec<(i32, i32)>),
    }

    #[derive(Serialize, Deserialize)]
    struct Doc {
        id: u64,
        name: String,
        neg: i64,
        tags: Option<Vec<String>>,
        shapes: Vec<Shape>,
        kids: Vec<Doc>,
    }

    #[test]
    fn values_decode_by_their_schema() {
        let doc = Doc {
            id: 300,
            name: "a".into(),
            neg: -5,
            tags: Some(vec!["x".into()]),
            shapes: vec![Shape::Dot, Shape::Circle { r: 1.5 }, Shape::Poly(vec![(1, -2)])],
            kids: vec![Doc {
                id: 1,
                name: String::new(),
                neg: 0,
                tags: None,
                shapes: vec![],
                kids: vec![],
            }],
        };
        let bytes = postcard::to_stdvec(&doc).unwrap();
        let v = to_json(&Schema::of::<Doc>(), &bytes);
        assert_eq!(
            v,
            json!({"id": 300, "name": "a", "neg": -5, "tags": ["x"],
                   "shapes": ["Dot", {"Circle": {"r": 1.5}}, {"Poly": [[1, -2]]}],
                   "kids": [{"id": 1, "name": "", "neg": 0, "tags": null, "shapes": [], "kids": []}]})
        );
        // Bytes that do not fit the schema are shown as hex, not as wrong values.
        assert_eq!(
            to_json(&Schema::of::<Doc>(), &bytes[..3]),
            json!({"hex": hex(&bytes[..3])})
        );
        assert_eq!(to_json(&Schema::declared("x", 1), &[1, 2]), json!({"hex": "0102"}));
    }
}
