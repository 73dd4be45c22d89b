//! Typed column values: text and binary forms of the common PostgreSQL types, and rows
//! deserialized into user structs.
