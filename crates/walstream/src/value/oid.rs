//! Well-known type OIDs: the built-in types [`Value`](super::Value) decodes, and their
//! arrays. (Fixed in PostgreSQL's catalog, `pg_type.dat`; the same on every server.)

use std::fmt;

use walproto::Oid;

/// `bool`.
pub const BOOL: Oid = Oid(16);
/// `bytea`.
pub const BYTEA: Oid = Oid(17);
/// `name`.
pub const NAME: Oid = Oid(19);
/// `int8`.
pub const INT8: Oid = Oid(20);
/// `int2`.
pub const INT2: Oid = Oid(21);
/// `int4`.
pub const INT4: Oid = Oid(23);
/// `text`.
pub const TEXT: Oid = Oid(25);
/// `oid`.
pub const OID: Oid = Oid(26);
/// `json`.
pub const JSON: Oid = Oid(114);
/// `float4`.
pub const FLOAT4: Oid = Oid(700);
/// `float8`.
pub const FLOAT8: Oid = Oid(701);
/// `bpchar` (`char(n)`).
pub const BPCHAR: Oid = Oid(1042);
/// `varchar`.
pub const VARCHAR: Oid = Oid(1043);
/// `date`.
pub const DATE: Oid = Oid(1082);
/// `time`.
pub const TIME: Oid = Oid(1083);
/// `timestamp`.
pub const TIMESTAMP: Oid = Oid(1114);
/// `timestamptz`.
pub const TIMESTAMPTZ: Oid = Oid(1184);
/// `interval`.
pub const INTERVAL: Oid = Oid(1186);
/// `numeric`.
pub const NUMERIC: Oid = Oid(1700);
/// `uuid`.
pub const UUID: Oid = Oid(2950);
/// `jsonb`.
pub const JSONB: Oid = Oid(3802);

/// `bool[]`.
pub const BOOL_ARRAY: Oid = Oid(1000);
/// `bytea[]`.
pub const BYTEA_ARRAY: Oid = Oid(1001);
/// `name[]`.
pub const NAME_ARRAY: Oid = Oid(1003);
/// `int2[]`.
pub const INT2_ARRAY: Oid = Oid(1005);
/// `int4[]`.
pub const INT4_ARRAY: Oid = Oid(1007);
/// `text[]`.
pub const TEXT_ARRAY: Oid = Oid(1009);
/// `bpchar[]`.
pub const BPCHAR_ARRAY: Oid = Oid(1014);
/// `varchar[]`.
pub const VARCHAR_ARRAY: Oid = Oid(1015);
/// `int8[]`.
pub const INT8_ARRAY: Oid = Oid(1016);
/// `float4[]`.
pub const FLOAT4_ARRAY: Oid = Oid(1021);
/// `float8[]`.
pub const FLOAT8_ARRAY: Oid = Oid(1022);
/// `oid[]`.
pub const OID_ARRAY: Oid = Oid(1028);
/// `timestamp[]`.
pub const TIMESTAMP_ARRAY: Oid = Oid(1115);
/// `date[]`.
pub const DATE_ARRAY: Oid = Oid(1182);
/// `time[]`.
pub const TIME_ARRAY: Oid = Oid(1183);
/// `timestamptz[]`.
pub const TIMESTAMPTZ_ARRAY: Oid = Oid(1185);
/// `interval[]`.
pub const INTERVAL_ARRAY: Oid = Oid(1187);
/// `numeric[]`.
pub const NUMERIC_ARRAY: Oid = Oid(1231);
/// `uuid[]`.
pub const UUID_ARRAY: Oid = Oid(2951);
/// `json[]`.
pub const JSON_ARRAY: Oid = Oid(199);
/// `jsonb[]`.
pub const JSONB_ARRAY: Oid = Oid(3807);

/// The element type of the array type `array`, for the arrays listed here.
pub fn element_type(array: Oid) -> Option<Oid> {
    ARRAYS
        .iter()
        .find(|(a, _)| *a == array)
        .map(|&(_, element)| element)
}

/// The SQL name of `type_oid`, for the types listed here.
pub fn type_name(type_oid: Oid) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(o, _)| *o == type_oid)
        .map(|&(_, name)| name)
}

/// The catalog name (`pg_type.typname`) of any built-in type, from postgres-types' copy of
/// the catalog, an array's as its element's name and `[]` (`int4[]`, not `_int4`); `None` for
/// a type created in the database (its name comes in a Type message).
pub fn catalog_name(type_oid: Oid) -> Option<String> {
    let ty = postgres_types::Type::from_oid(type_oid.0)?;
    Some(match ty.kind() {
        postgres_types::Kind::Array(element) => format!("{}[]", element.name()),
        _ => ty.name().to_owned(),
    })
}

/// The element type of any built-in array type, from postgres-types' copy of the catalog.
pub fn catalog_element(array: Oid) -> Option<Oid> {
    match postgres_types::Type::from_oid(array.0)?.kind() {
        postgres_types::Kind::Array(element) => Some(Oid(element.oid())),
        _ => None,
    }
}

/// `type_name`, or `type <oid>` for others.
pub(crate) struct DisplayType(pub(crate) Oid);

impl fmt::Display for DisplayType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match type_name(self.0) {
            Some(name) => f.write_str(name),
            None => write!(f, "type {}", self.0),
        }
    }
}

const ARRAYS: [(Oid, Oid); 21] = [
    (BOOL_ARRAY, BOOL),
    (BYTEA_ARRAY, BYTEA),
    (NAME_ARRAY, NAME),
    (INT2_ARRAY, INT2),
    (INT4_ARRAY, INT4),
    (TEXT_ARRAY, TEXT),
    (BPCHAR_ARRAY, BPCHAR),
    (VARCHAR_ARRAY, VARCHAR),
    (INT8_ARRAY, INT8),
    (FLOAT4_ARRAY, FLOAT4),
    (FLOAT8_ARRAY, FLOAT8),
    (OID_ARRAY, OID),
    (TIMESTAMP_ARRAY, TIMESTAMP),
    (DATE_ARRAY, DATE),
    (TIME_ARRAY, TIME),
    (TIMESTAMPTZ_ARRAY, TIMESTAMPTZ),
    (INTERVAL_ARRAY, INTERVAL),
    (NUMERIC_ARRAY, NUMERIC),
    (UUID_ARRAY, UUID),
    (JSON_ARRAY, JSON),
    (JSONB_ARRAY, JSONB),
];

pub(crate) const NAMES: [(Oid, &str); 42] = [
    (BOOL, "bool"),
    (BYTEA, "bytea"),
    (NAME, "name"),
    (INT8, "int8"),
    (INT2, "int2"),
    (INT4, "int4"),
    (TEXT, "text"),
    (OID, "oid"),
    (JSON, "json"),
    (FLOAT4, "float4"),
    (FLOAT8, "float8"),
    (BPCHAR, "bpchar"),
    (VARCHAR, "varchar"),
    (DATE, "date"),
    (TIME, "time"),
    (TIMESTAMP, "timestamp"),
    (TIMESTAMPTZ, "timestamptz"),
    (INTERVAL, "interval"),
    (NUMERIC, "numeric"),
    (UUID, "uuid"),
    (JSONB, "jsonb"),
    (BOOL_ARRAY, "bool[]"),
    (BYTEA_ARRAY, "bytea[]"),
    (NAME_ARRAY, "name[]"),
    (INT2_ARRAY, "int2[]"),
    (INT4_ARRAY, "int4[]"),
    (TEXT_ARRAY, "text[]"),
    (BPCHAR_ARRAY, "bpchar[]"),
    (VARCHAR_ARRAY, "varchar[]"),
    (INT8_ARRAY, "int8[]"),
    (FLOAT4_ARRAY, "float4[]"),
    (FLOAT8_ARRAY, "float8[]"),
    (OID_ARRAY, "oid[]"),
    (TIMESTAMP_ARRAY, "timestamp[]"),
    (DATE_ARRAY, "date[]"),
    (TIME_ARRAY, "time[]"),
    (TIMESTAMPTZ_ARRAY, "timestamptz[]"),
    (INTERVAL_ARRAY, "interval[]"),
    (NUMERIC_ARRAY, "numeric[]"),
    (UUID_ARRAY, "uuid[]"),
    (JSON_ARRAY, "json[]"),
    (JSONB_ARRAY, "jsonb[]"),
];

#[cfg(test)]
mod tests {
    use postgres_types::Type;

    use super::*;

    /// The constants agree with postgres-types' catalog.
    #[test]
    fn catalog_names_cover_every_built_in_type() {
        assert_eq!(catalog_name(INT4_ARRAY).as_deref(), Some("int4[]"));
        assert_eq!(catalog_name(Oid(869)).as_deref(), Some("inet"));
        assert_eq!(catalog_name(Oid(3904)).as_deref(), Some("int4range"));
        assert_eq!(catalog_name(Oid(16_384)), None);
        assert_eq!(catalog_element(Oid(1041)), Some(Oid(869)));
        assert_eq!(catalog_element(INT4), None);
        for (oid, name) in NAMES {
            assert_eq!(catalog_name(oid).as_deref(), Some(name));
        }
    }

    #[test]
    fn oids_match_the_catalog() {
        for (oid, name) in NAMES {
            let ty = Type::from_oid(oid.0).unwrap();
            let pg_name = match ty.kind() {
                postgres_types::Kind::Array(e) => format!("{}[]", e.name()),
                _ => ty.name().to_owned(),
            };
            assert_eq!(pg_name, name, "{oid}");
        }
        for (array, element) in ARRAYS {
            let ty = Type::from_oid(array.0).unwrap();
            let postgres_types::Kind::Array(e) = ty.kind() else {
                panic!("{ty} is not an array")
            };
            assert_eq!(e.oid(), element.0);
        }
    }
}
