//! The capture header: the JSON line after the magic, which says how the stream was started.
//! The one reader and writer of it (feature `serde`), used by the CLI's `record` and `decode`,
//! xtask's fuzz seeds and the tests.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::pgoutput::{Options, OriginFilter, ProtocolVersion, Refusal, Streaming};

/// The header of a capture file (`shared/CLI.md`, "Capture file format"), in that file's field
/// order.
///
/// `proto_version` and `streaming` are required: they decide how every message parses, and a
/// capture that does not say them cannot be decoded without guessing. The other fields describe
/// where the stream came from; they are checked for type when present. Unknown fields are
/// ignored, so later versions of the header can add some.
///
/// ```
/// use walproto::capture::Header;
/// use walproto::pgoutput::{Options, ProtocolVersion, Streaming};
///
/// let header = Header::new(Options { streaming: Streaming::On, ..Options::new(ProtocolVersion::V2) });
/// let line = header.to_json();
/// assert_eq!(line, r#"{"proto_version":2,"streaming":"on","binary":false,"messages":false,"two_phase":false}"#);
/// assert_eq!(Header::from_json(&line)?.options(), header.options());
/// # Ok::<(), walproto::capture::HeaderError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    /// `server_version`, such as `17.2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// `server_version_num`, such as `170002`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version_num: Option<u32>,
    /// The protocol version the stream was started with.
    #[serde(serialize_with = "protocol_number")]
    pub proto_version: ProtocolVersion,
    /// The streaming mode the stream was started with.
    pub streaming: Streaming,
    /// `binary`, when said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<bool>,
    /// `messages`, when said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<bool>,
    /// `two_phase`, when said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub two_phase: Option<bool>,
    /// `origin`, when said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginFilter>,
    /// The slot recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// The publications recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publications: Option<Vec<String>>,
    /// The server's system identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// The server's timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

/// The header as it is on the wire, before `proto_version` is checked.
#[derive(Deserialize)]
struct Raw {
    proto_version: u32,
    streaming: Streaming,
    #[serde(default)]
    server_version: Option<String>,
    #[serde(default)]
    server_version_num: Option<u32>,
    #[serde(default)]
    binary: Option<bool>,
    #[serde(default)]
    messages: Option<bool>,
    #[serde(default)]
    two_phase: Option<bool>,
    #[serde(default)]
    origin: Option<OriginFilter>,
    #[serde(default)]
    slot: Option<String>,
    #[serde(default)]
    publications: Option<Vec<String>>,
    #[serde(default)]
    system_id: Option<String>,
    #[serde(default)]
    timeline: Option<u32>,
}

fn protocol_number<S: serde::Serializer>(v: &ProtocolVersion, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(v.number())
}

/// Why a header line is not a usable capture header.
#[derive(Debug)]
#[non_exhaustive]
pub enum HeaderError {
    /// Not JSON, not an object, a required field missing, or a field of the wrong type.
    Json(serde_json::Error),
    /// A `proto_version` pgoutput does not have.
    UnknownProtocol(u32),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Json(e) => write!(f, "{e}"),
            HeaderError::UnknownProtocol(n) => {
                write!(f, "proto_version {n} is not a pgoutput version (1 to 4)")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HeaderError {}

impl Header {
    /// The header of a stream started with `options`, every option said; the fields that
    /// describe the source are left out until set.
    pub fn new(options: Options) -> Self {
        Header {
            server_version: None,
            server_version_num: None,
            proto_version: options.proto_version,
            streaming: options.streaming,
            binary: Some(options.binary),
            messages: Some(options.messages),
            two_phase: Some(options.two_phase),
            origin: options.origin,
            slot: None,
            publications: None,
            system_id: None,
            timeline: None,
        }
    }

    /// Parses and checks the header line.
    pub fn from_json(line: &str) -> Result<Self, HeaderError> {
        let raw: Raw = serde_json::from_str(line).map_err(HeaderError::Json)?;
        let proto_version = ProtocolVersion::from_number(raw.proto_version)
            .ok_or(HeaderError::UnknownProtocol(raw.proto_version))?;
        Ok(Header {
            server_version: raw.server_version,
            server_version_num: raw.server_version_num,
            proto_version,
            streaming: raw.streaming,
            binary: raw.binary,
            messages: raw.messages,
            two_phase: raw.two_phase,
            origin: raw.origin,
            slot: raw.slot,
            publications: raw.publications,
            system_id: raw.system_id,
            timeline: raw.timeline,
        })
    }

    /// The header line (without its newline).
    pub fn to_json(&self) -> String {
        // Serializing this struct of strings, numbers and booleans into a String cannot fail;
        // the fallback keeps the signature panic-free.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The options the stream was started with (an option not said was off).
    pub fn options(&self) -> Options {
        Options {
            proto_version: self.proto_version,
            streaming: self.streaming,
            binary: self.binary.unwrap_or(false),
            messages: self.messages.unwrap_or(false),
            two_phase: self.two_phase.unwrap_or(false),
            origin: self.origin,
        }
    }

    /// Option combinations PostgreSQL refuses at `START_REPLICATION`; such a capture was not
    /// recorded from a real server. A decoder can go on (the parse context gives each option
    /// the meaning it has in the protocol version), with a warning.
    pub fn inconsistencies(&self) -> impl Iterator<Item = Refusal> {
        self.options().protocol_refusals()
    }
}

impl fmt::Display for Header {
    /// A one-line summary for diagnostics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn or_unknown<T: fmt::Display>(v: Option<T>) -> impl fmt::Display {
            struct Shown<T>(Option<T>);
            impl<T: fmt::Display> fmt::Display for Shown<T> {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    match &self.0 {
                        Some(v) => v.fmt(f),
                        None => f.write_str("?"),
                    }
                }
            }
            Shown(v)
        }
        write!(
            f,
            "PostgreSQL {} ({}), system {} timeline {}, slot {}, publications [",
            or_unknown(self.server_version.as_deref()),
            or_unknown(self.server_version_num),
            or_unknown(self.system_id.as_deref()),
            or_unknown(self.timeline),
            or_unknown(self.slot.as_deref()),
        )?;
        for (i, p) in self.publications.iter().flatten().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p)?;
        }
        write!(
            f,
            "], proto_version {}, streaming {}, binary {:?}, messages {:?}, two_phase {:?}, \
             origin {:?}",
            self.proto_version.number(),
            self.streaming,
            self.binary,
            self.messages,
            self.two_phase,
            self.origin,
        )
    }
}

// These run when the `serde` feature is on: in every workspace test run, where walstream-cli
// turns it on for walproto.
#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn real_header_and_minimal_header() {
        let h = Header::from_json(
            r#"{"server_version":"17.2","server_version_num":170002,"proto_version":4,
               "streaming":"parallel","binary":false,"messages":true,"two_phase":true,
               "origin":"none","slot":"s","publications":["a","b"],"system_id":"7",
               "timeline":1,"future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(h.proto_version, ProtocolVersion::V4);
        assert_eq!(h.streaming, Streaming::Parallel);
        assert_eq!(h.origin, Some(OriginFilter::None));
        assert!(h.inconsistencies().next().is_none());
        let h = Header::from_json(r#"{"proto_version":1,"streaming":"off"}"#).unwrap();
        assert_eq!(h.streaming, Streaming::Off);
    }

    #[test]
    fn missing_or_wrong_fields_are_named() {
        let e = Header::from_json(r#"{"proto_version":1}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `streaming`"), "{e}");
        let e = Header::from_json(r#"{"streaming":"on"}"#).unwrap_err();
        assert!(
            e.to_string().contains("missing field `proto_version`"),
            "{e}"
        );
        let e = Header::from_json(r#"{"proto_version":"1","streaming":"on"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = Header::from_json(r#"{"proto_version":1,"streaming":"yes"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `yes`"), "{e}");
        let e = Header::from_json(r#"{"proto_version":5,"streaming":"on"}"#).unwrap_err();
        assert!(matches!(e, HeaderError::UnknownProtocol(5)));
        assert!(Header::from_json("[]").is_err());
        assert!(Header::from_json("").is_err());
    }

    #[test]
    fn inconsistent_options_are_flagged() {
        let h = Header::from_json(r#"{"proto_version":3,"streaming":"parallel"}"#).unwrap();
        assert_eq!(h.inconsistencies().count(), 1);
        let h =
            Header::from_json(r#"{"proto_version":1,"streaming":"on","two_phase":true}"#).unwrap();
        assert_eq!(h.inconsistencies().count(), 2);
    }

    #[test]
    fn written_headers_keep_the_contract_field_order() {
        let mut h = Header::new(Options::new(ProtocolVersion::V1));
        h.server_version = Some("17.2".into());
        h.server_version_num = Some(170_002);
        h.origin = Some(OriginFilter::Any);
        h.slot = Some("s".into());
        h.publications = Some(alloc::vec!["pub".into()]);
        h.system_id = Some("1".into());
        h.timeline = Some(1);
        assert_eq!(
            h.to_json(),
            r#"{"server_version":"17.2","server_version_num":170002,"proto_version":1,"streaming":"off","binary":false,"messages":false,"two_phase":false,"origin":"any","slot":"s","publications":["pub"],"system_id":"1","timeline":1}"#
        );
        assert_eq!(Header::from_json(&h.to_json()).unwrap(), h);
    }
}
