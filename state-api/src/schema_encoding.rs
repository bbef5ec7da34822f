//! How a [`Schema`] is stored: as a flat list of nodes in post-order, children referred
//! to by index, so that decoding a schema read from storage never recurses; a tree
//! deeper than [`MAX_DEPTH`], a child referred to twice or a forward reference is an
//! error, not a stack overflow.

use serde::{Deserialize, Serialize};

use crate::schema::{Field, Schema, Variant, VariantShape};

/// The deepest schema a snapshot may hold (far beyond any real type's nesting).
pub const MAX_DEPTH: u32 = 256;

#[derive(Serialize, Deserialize)]
pub(crate) struct FlatSchema(Vec<Node>);

#[derive(Serialize, Deserialize)]
enum Node {
    Leaf(Leaf),
    Option(u32),
    Seq(u32),
    Map(u32, u32),
    Tuple(Vec<u32>),
    Array(u32, u64),
    NewtypeStruct(u32),
    TupleStruct(Vec<u32>),
    Struct(Vec<(String, u32)>),
    Enum(Vec<(String, VariantNode)>),
    Recursive(u32),
    Declared(String, u32),
    Opaque(String),
}

#[derive(Serialize, Deserialize, Clone, Copy)]
enum Leaf {
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    UnitStruct,
}

#[derive(Serialize, Deserialize)]
enum VariantNode {
    Unit,
    Newtype(u32),
    Tuple(Vec<u32>),
    Struct(Vec<(String, u32)>),
}

fn leaf(s: &Schema) -> Option<Leaf> {
    use Schema as S;
    Some(match s {
        S::Unit => Leaf::Unit,
        S::Bool => Leaf::Bool,
        S::I8 => Leaf::I8,
        S::I16 => Leaf::I16,
        S::I32 => Leaf::I32,
        S::I64 => Leaf::I64,
        S::I128 => Leaf::I128,
        S::U8 => Leaf::U8,
        S::U16 => Leaf::U16,
        S::U32 => Leaf::U32,
        S::U64 => Leaf::U64,
        S::U128 => Leaf::U128,
        S::F32 => Leaf::F32,
        S::F64 => Leaf::F64,
        S::Char => Leaf::Char,
        S::Str => Leaf::Str,
        S::Bytes => Leaf::Bytes,
        S::UnitStruct => Leaf::UnitStruct,
        _ => return None,
    })
}

fn from_leaf(l: Leaf) -> Schema {
    use Schema as S;
    match l {
        Leaf::Unit => S::Unit,
        Leaf::Bool => S::Bool,
        Leaf::I8 => S::I8,
        Leaf::I16 => S::I16,
        Leaf::I32 => S::I32,
        Leaf::I64 => S::I64,
        Leaf::I128 => S::I128,
        Leaf::U8 => S::U8,
        Leaf::U16 => S::U16,
        Leaf::U32 => S::U32,
        Leaf::U64 => S::U64,
        Leaf::U128 => S::U128,
        Leaf::F32 => S::F32,
        Leaf::F64 => S::F64,
        Leaf::Char => S::Char,
        Leaf::Str => S::Str,
        Leaf::Bytes => S::Bytes,
        Leaf::UnitStruct => S::UnitStruct,
    }
}

/// Appends `s` (children first) and returns its index.
fn flatten(s: &Schema, out: &mut Vec<Node>) -> u32 {
    use Schema as S;
    let all = |items: &[Schema], out: &mut Vec<Node>| items.iter().map(|i| flatten(i, out)).collect::<Vec<_>>();
    let fields = |fs: &[Field], out: &mut Vec<Node>| {
        fs.iter()
            .map(|f| (f.name.clone(), flatten(&f.schema, out)))
            .collect::<Vec<_>>()
    };
    let node = if let Some(l) = leaf(s) {
        Node::Leaf(l)
    } else {
        match s {
            S::Option(x) => Node::Option(flatten(x, out)),
            S::Seq(x) => Node::Seq(flatten(x, out)),
            S::Map { key, value } => {
                let k = flatten(key, out);
                Node::Map(k, flatten(value, out))
            }
            S::Tuple(items) => Node::Tuple(all(items, out)),
            S::Array { element, len } => Node::Array(flatten(element, out), *len),
            S::NewtypeStruct(x) => Node::NewtypeStruct(flatten(x, out)),
            S::TupleStruct(items) => Node::TupleStruct(all(items, out)),
            S::Struct(fs) => Node::Struct(fields(fs, out)),
            S::Enum(vs) => Node::Enum(
                vs.iter()
                    .map(|v| {
                        let shape = match &v.shape {
                            VariantShape::Unit => VariantNode::Unit,
                            VariantShape::Newtype(x) => VariantNode::Newtype(flatten(x, out)),
                            VariantShape::Tuple(items) => VariantNode::Tuple(all(items, out)),
                            VariantShape::Struct(fs) => VariantNode::Struct(fields(fs, out)),
                        };
                        (v.name.clone(), shape)
                    })
                    .collect(),
            ),
            S::Recursive(d) => Node::Recursive(*d),
            S::Declared { id, version } => Node::Declared(id.clone(), *version),
            S::Opaque { type_name } => Node::Opaque(type_name.clone()),
            _ => Node::Leaf(Leaf::Unit),
        }
    };
    out.push(node);
    (out.len() - 1) as u32
}

impl From<Schema> for FlatSchema {
    fn from(s: Schema) -> Self {
        let mut out = Vec::new();
        flatten(&s, &mut out);
        FlatSchema(out)
    }
}

/// Builds the tree bottom-up, taking every child exactly once.
struct Builder {
    built: Vec<Option<(Schema, u32)>>,
}

impl Builder {
    fn take(&mut self, at: usize, child: u32) -> Result<(Schema, u32), String> {
        let c = child as usize;
        if c >= at {
            return Err(format!("node {at} refers to node {c}, which does not come before it"));
        }
        self.built
            .get_mut(c)
            .and_then(Option::take)
            .ok_or_else(|| format!("node {c} is used twice"))
    }

    fn all(&mut self, at: usize, children: &[u32], depth: &mut u32) -> Result<Vec<Schema>, String> {
        children
            .iter()
            .map(|&c| {
                let (s, d) = self.take(at, c)?;
                *depth = (*depth).max(d);
                Ok(s)
            })
            .collect()
    }

    fn fields(&mut self, at: usize, fields: Vec<(String, u32)>, depth: &mut u32) -> Result<Vec<Field>, String> {
        fields
            .into_iter()
            .map(|(name, c)| {
                let (schema, d) = self.take(at, c)?;
                *depth = (*depth).max(d);
                Ok(Field { name, schema })
            })
            .collect()
    }

    fn one(&mut self, at: usize, c: u32, depth: &mut u32) -> Result<Box<Schema>, String> {
        let (s, d) = self.take(at, c)?;
        *depth = (*depth).max(d);
        Ok(Box::new(s))
    }
}

impl TryFrom<FlatSchema> for Schema {
    type Error = String;

    fn try_from(flat: FlatSchema) -> Result<Self, Self::Error> {
        use Schema as S;
        let count = flat.0.len();
        let mut b = Builder {
            built: Vec::with_capacity(count),
        };
        for (at, node) in flat.0.into_iter().enumerate() {
            let mut depth = 0;
            let schema = match node {
                Node::Leaf(l) => from_leaf(l),
                Node::Option(c) => S::Option(b.one(at, c, &mut depth)?),
                Node::Seq(c) => S::Seq(b.one(at, c, &mut depth)?),
                Node::Map(k, v) => S::Map {
                    key: b.one(at, k, &mut depth)?,
                    value: b.one(at, v, &mut depth)?,
                },
                Node::Tuple(cs) => S::Tuple(b.all(at, &cs, &mut depth)?),
                Node::Array(c, len) => S::Array {
                    element: b.one(at, c, &mut depth)?,
                    len,
                },
                Node::NewtypeStruct(c) => S::NewtypeStruct(b.one(at, c, &mut depth)?),
                Node::TupleStruct(cs) => S::TupleStruct(b.all(at, &cs, &mut depth)?),
                Node::Struct(fs) => S::Struct(b.fields(at, fs, &mut depth)?),
                Node::Enum(vs) => {
                    let mut variants = Vec::with_capacity(vs.len());
                    for (name, shape) in vs {
                        let shape = match shape {
                            VariantNode::Unit => VariantShape::Unit,
                            VariantNode::Newtype(c) => VariantShape::Newtype(b.one(at, c, &mut depth)?),
                            VariantNode::Tuple(cs) => VariantShape::Tuple(b.all(at, &cs, &mut depth)?),
                            VariantNode::Struct(fs) => VariantShape::Struct(b.fields(at, fs, &mut depth)?),
                        };
                        variants.push(Variant { name, shape });
                    }
                    S::Enum(variants)
                }
                Node::Recursive(d) => S::Recursive(d),
                Node::Declared(id, version) => S::Declared { id, version },
                Node::Opaque(type_name) => S::Opaque { type_name },
            };
            let depth = depth + 1;
            if depth > MAX_DEPTH {
                return Err(format!("schema nested deeper than {MAX_DEPTH} levels"));
            }
            b.built.push(Some((schema, depth)));
        }
        let root = b.built.pop().flatten().ok_or("an empty schema")?.0;
        if b.built.iter().any(Option::is_some) {
            return Err("schema nodes that belong to no parent".into());
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_flat_schemas_are_errors_not_recursion() {
        let ok = |nodes: Vec<Node>| Schema::try_from(FlatSchema(nodes));
        assert_eq!(
            ok(vec![Node::Leaf(Leaf::U8), Node::Seq(0)]).unwrap(),
            Schema::Seq(Box::new(Schema::U8))
        );
        assert!(ok(vec![Node::Seq(0)]).is_err(), "self reference");
        assert!(
            ok(vec![Node::Leaf(Leaf::U8), Node::Map(0, 0)]).is_err(),
            "a child twice"
        );
        assert!(
            ok(vec![Node::Leaf(Leaf::U8), Node::Leaf(Leaf::U8)]).is_err(),
            "an orphan"
        );
        assert!(ok(vec![]).is_err());
        let mut deep = vec![Node::Leaf(Leaf::U8)];
        for i in 0..(MAX_DEPTH as usize + 5) {
            deep.push(Node::Option(i as u32));
        }
        assert!(ok(deep).unwrap_err().contains("deeper"));
    }
}
