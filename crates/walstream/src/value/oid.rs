//! Type OIDs, named by postgres-types' copy of PostgreSQL's catalog ([`Type`], re-exported
//! here): which built-in types [`Value`](super::Value) decodes, their arrays' element types,
//! and catalog names for every built-in type (`inet`, the ranges and the rest). Built-in OIDs
//! are fixed in `pg_type.dat`, the same on every server; a type created in the database has
//! an OID of its own, which only its Relation and Type messages name.
//!
//! ```
//! use walstream::value::oid::{self, Type};
//! use walstream::walproto::Oid;
//!
//! assert_eq!(oid::of(&Type::INT4_ARRAY), Oid(1007));
//! assert_eq!(oid::element_type(Oid(1007)), Some(oid::of(&Type::INT4)));
//! assert_eq!(oid::type_name(Oid(1007)).as_deref(), Some("int4[]"));
//! assert_eq!(oid::catalog_name(Oid(869)).as_deref(), Some("inet"));
//! ```

use std::fmt;

use postgres_types::Kind;
pub use postgres_types::Type;
use walproto::Oid;

/// The OID of `ty`, as walproto's Relation messages ([`ColumnInfo::type_oid`](crate::ColumnInfo))
/// carry it.
pub fn of(ty: &Type) -> Oid {
    Oid(ty.oid())
}

/// The built-in type `type_oid` names; `None` for a type created in the database.
pub fn catalog_type(type_oid: Oid) -> Option<Type> {
    Type::from_oid(type_oid.0)
}

/// Whether [`Value::decode`](super::Value::decode) decodes `type_oid` (a type of its own, not
/// [`Value::Unknown`](super::Value::Unknown)).
pub fn is_decoded(type_oid: Oid) -> bool {
    decoded(type_oid).is_some()
}

/// The element type of the array type `array`, for the arrays [`Value`](super::Value)
/// decodes; see [`catalog_element`] for any built-in array.
pub fn element_type(array: Oid) -> Option<Oid> {
    match decoded(array)?.kind() {
        Kind::Array(element) => Some(of(element)),
        _ => None,
    }
}

/// The SQL name of `type_oid` (an array's as its element's name and `[]`), for the types
/// [`Value`](super::Value) decodes; see [`catalog_name`] for any built-in type.
pub fn type_name(type_oid: Oid) -> Option<String> {
    decoded(type_oid).map(|ty| name(&ty))
}

/// The catalog name (`pg_type.typname`) of any built-in type, from postgres-types' copy of
/// the catalog, an array's as its element's name and `[]` (`int4[]`, not `_int4`); `None` for
/// a type created in the database (its name comes in a Type message).
pub fn catalog_name(type_oid: Oid) -> Option<String> {
    catalog_type(type_oid).map(|ty| name(&ty))
}

/// The element type of any built-in array type, from postgres-types' copy of the catalog.
pub fn catalog_element(array: Oid) -> Option<Oid> {
    match catalog_type(array)?.kind() {
        Kind::Array(element) => Some(of(element)),
        _ => None,
    }
}

/// `type_name`, or `type <oid>` for others.
pub(crate) struct DisplayType(pub(crate) Oid);

impl fmt::Display for DisplayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match type_name(self.0) {
            Some(name) => f.write_str(&name),
            None => write!(f, "type {}", self.0),
        }
    }
}

/// The types [`Value`](super::Value) decodes: its scalar types, then their arrays. (The order
/// is the fuzz target `value_decode`'s: its first byte is an index into this list.)
pub(crate) const DECODED: [Type; 42] = [
    Type::BOOL,
    Type::BYTEA,
    Type::NAME,
    Type::INT8,
    Type::INT2,
    Type::INT4,
    Type::TEXT,
    Type::OID,
    Type::JSON,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::BPCHAR,
    Type::VARCHAR,
    Type::DATE,
    Type::TIME,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
    Type::INTERVAL,
    Type::NUMERIC,
    Type::UUID,
    Type::JSONB,
    Type::BOOL_ARRAY,
    Type::BYTEA_ARRAY,
    Type::NAME_ARRAY,
    Type::INT2_ARRAY,
    Type::INT4_ARRAY,
    Type::TEXT_ARRAY,
    Type::BPCHAR_ARRAY,
    Type::VARCHAR_ARRAY,
    Type::INT8_ARRAY,
    Type::FLOAT4_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::OID_ARRAY,
    Type::TIMESTAMP_ARRAY,
    Type::DATE_ARRAY,
    Type::TIME_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::INTERVAL_ARRAY,
    Type::NUMERIC_ARRAY,
    Type::UUID_ARRAY,
    Type::JSON_ARRAY,
    Type::JSONB_ARRAY,
];

/// The type of `type_oid` if [`DECODED`] lists it.
fn decoded(type_oid: Oid) -> Option<Type> {
    catalog_type(type_oid).filter(|ty| DECODED.contains(ty))
}

/// `ty`'s name, an array's as its element's and `[]`.
fn name(ty: &Type) -> String {
    match ty.kind() {
        Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::value::{Raw, Value};

    #[test]
    fn catalog_names_cover_every_built_in_type() {
        assert_eq!(
            catalog_name(of(&Type::INT4_ARRAY)).as_deref(),
            Some("int4[]")
        );
        assert_eq!(catalog_name(Oid(869)).as_deref(), Some("inet"));
        assert_eq!(catalog_name(Oid(3904)).as_deref(), Some("int4range"));
        assert_eq!(catalog_name(Oid(16_384)), None);
        assert_eq!(catalog_element(Oid(1041)), Some(Oid(869)));
        assert_eq!(catalog_element(of(&Type::INT4)), None);
        for ty in DECODED {
            assert_eq!(catalog_name(of(&ty)), type_name(of(&ty)));
        }
    }

    /// Decoded: the 21 scalar types and exactly their 21 arrays, with the OIDs and names of
    /// PostgreSQL's catalog (a few pinned here).
    #[test]
    fn the_decoded_types_are_scalars_and_their_arrays() {
        let (arrays, scalars): (Vec<_>, Vec<_>) = DECODED
            .iter()
            .partition(|ty| matches!(ty.kind(), Kind::Array(_)));
        assert_eq!((scalars.len(), arrays.len()), (21, 21));
        for (scalar, array) in scalars.iter().zip(&arrays) {
            let element = element_type(of(array)).unwrap();
            assert!(scalars.iter().any(|s| of(s) == element), "{array}");
            assert_eq!(element_type(of(scalar)), None);
        }
        for scalar in &scalars {
            assert!(
                arrays
                    .iter()
                    .any(|a| element_type(of(a)) == Some(of(scalar))),
                "no array of {scalar}"
            );
        }
        assert_eq!(of(&Type::BOOL), Oid(16));
        assert_eq!(of(&Type::JSONB_ARRAY), Oid(3807));
        assert_eq!(type_name(Oid(1700)).as_deref(), Some("numeric"));
        assert_eq!(type_name(Oid(1231)).as_deref(), Some("numeric[]"));
        assert_eq!(type_name(Oid(869)), None);
        assert_eq!(element_type(Oid(1041)), None, "inet[] is not decoded");
        assert_eq!(DisplayType(Oid(869)).to_string(), "type 869");
        assert_eq!(DisplayType(Oid(25)).to_string(), "text");
    }

    /// [`DECODED`] and the decoders agree: a listed type never comes out as
    /// [`Value::Unknown`], and a built-in type not listed always does, in both formats.
    #[test]
    fn the_decoders_decode_exactly_the_listed_types() {
        let unknown = |v: &Result<Value, _>| matches!(v, Ok(Value::Unknown { .. }));
        for ty in DECODED {
            let oid = of(&ty);
            assert!(!unknown(&Value::decode_text(oid, "")), "{ty}");
            assert!(!unknown(&Value::decode_binary(oid, &Bytes::new())), "{ty}");
        }
        for oid in [Oid(869), Oid(1041), Oid(3904), Oid(16_384)] {
            assert_eq!(
                Value::decode_text(oid, "x"),
                Ok(Value::Unknown {
                    type_oid: oid,
                    raw: Raw::Text("x".to_owned())
                })
            );
            assert!(unknown(&Value::decode_binary(oid, &Bytes::new())));
            assert!(!is_decoded(oid));
        }
    }
}
