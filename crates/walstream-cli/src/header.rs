//! The capture header: the JSON line after the magic, which says how the stream was started.

use std::fmt;

use serde::Deserialize;
use walproto::pgoutput::{ProtocolVersion, Streaming};

/// The header of a capture file (`shared/CLI.md`, "Capture file format").
///
/// `proto_version` and `streaming` are required: they decide how every message parses, and a
/// capture that does not say them cannot be decoded without guessing. The other fields describe
/// where the stream came from; they are checked for type when present and only shown in
/// diagnostics. Unknown fields are ignored, so later versions of the header can add some.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CaptureHeader {
    pub(crate) proto_version: u32,
    pub(crate) streaming: StreamingOption,
    #[serde(default)]
    pub(crate) server_version: Option<String>,
    #[serde(default)]
    pub(crate) server_version_num: Option<u32>,
    #[serde(default)]
    pub(crate) binary: Option<bool>,
    #[serde(default)]
    pub(crate) messages: Option<bool>,
    #[serde(default)]
    pub(crate) two_phase: Option<bool>,
    #[serde(default)]
    pub(crate) origin: Option<OriginOption>,
    #[serde(default)]
    pub(crate) slot: Option<String>,
    #[serde(default)]
    pub(crate) publications: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) system_id: Option<String>,
    #[serde(default)]
    pub(crate) timeline: Option<u32>,
}

/// pgoutput's `streaming` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StreamingOption {
    Off,
    On,
    Parallel,
}

/// pgoutput's `origin` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OriginOption {
    Any,
    None,
}

/// Why a header line is not a usable capture header.
#[derive(Debug)]
pub(crate) enum HeaderError {
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

impl CaptureHeader {
    /// Parses and checks the header line.
    pub(crate) fn parse(line: &str) -> Result<Self, HeaderError> {
        let header: CaptureHeader = serde_json::from_str(line).map_err(HeaderError::Json)?;
        header.protocol()?;
        Ok(header)
    }

    /// The protocol version, as walproto names it.
    pub(crate) fn protocol(&self) -> Result<ProtocolVersion, HeaderError> {
        ProtocolVersion::from_number(self.proto_version)
            .ok_or(HeaderError::UnknownProtocol(self.proto_version))
    }

    /// The streaming mode, as walproto names it.
    pub(crate) fn streaming(&self) -> Streaming {
        match self.streaming {
            StreamingOption::Off => Streaming::Off,
            StreamingOption::On => Streaming::On,
            StreamingOption::Parallel => Streaming::Parallel,
        }
    }

    /// Option combinations PostgreSQL refuses at `START_REPLICATION`; such a capture was not
    /// recorded from a real server. Decoding goes on (walproto's parse context gives each
    /// option the meaning it has in that protocol version), with a warning.
    pub(crate) fn inconsistencies(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        if self.proto_version < 2 && self.streaming != StreamingOption::Off {
            found.push("streaming needs proto_version 2 or later");
        }
        if self.proto_version < 4 && self.streaming == StreamingOption::Parallel {
            found.push("streaming \"parallel\" needs proto_version 4 or later");
        }
        if self.proto_version < 3 && self.two_phase == Some(true) {
            found.push("two_phase needs proto_version 3 or later");
        }
        found
    }
}

impl fmt::Display for CaptureHeader {
    /// A one-line summary for diagnostics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_owned());
        write!(
            f,
            "PostgreSQL {} ({}), system {} timeline {}, slot {}, publications [{}], \
             proto_version {}, streaming {:?}, binary {:?}, messages {:?}, two_phase {:?}, \
             origin {:?}",
            opt(&self.server_version),
            self.server_version_num
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            opt(&self.system_id),
            self.timeline
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            opt(&self.slot),
            self.publications.as_deref().unwrap_or_default().join(", "),
            self.proto_version,
            self.streaming,
            self.binary,
            self.messages,
            self.two_phase,
            self.origin,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_header_and_minimal_header() {
        let h = CaptureHeader::parse(
            r#"{"server_version":"17.2","server_version_num":170002,"proto_version":4,
               "streaming":"parallel","binary":false,"messages":true,"two_phase":true,
               "origin":"none","slot":"s","publications":["a","b"],"system_id":"7",
               "timeline":1,"future_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(h.protocol().unwrap(), ProtocolVersion::V4);
        assert_eq!(h.streaming(), Streaming::Parallel);
        assert_eq!(h.origin, Some(OriginOption::None));
        assert!(h.inconsistencies().is_empty());
        let h = CaptureHeader::parse(r#"{"proto_version":1,"streaming":"off"}"#).unwrap();
        assert_eq!(h.streaming(), Streaming::Off);
    }

    #[test]
    fn missing_or_wrong_fields_are_named() {
        let e = CaptureHeader::parse(r#"{"proto_version":1}"#).unwrap_err();
        assert!(e.to_string().contains("missing field `streaming`"), "{e}");
        let e = CaptureHeader::parse(r#"{"streaming":"on"}"#).unwrap_err();
        assert!(
            e.to_string().contains("missing field `proto_version`"),
            "{e}"
        );
        let e = CaptureHeader::parse(r#"{"proto_version":"1","streaming":"on"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = CaptureHeader::parse(r#"{"proto_version":1,"streaming":"yes"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown variant `yes`"), "{e}");
        let e = CaptureHeader::parse(r#"{"proto_version":5,"streaming":"on"}"#).unwrap_err();
        assert!(matches!(e, HeaderError::UnknownProtocol(5)));
        assert!(CaptureHeader::parse("[]").is_err());
        assert!(CaptureHeader::parse("").is_err());
    }

    #[test]
    fn inconsistent_options_are_flagged() {
        let h = CaptureHeader::parse(r#"{"proto_version":3,"streaming":"parallel"}"#).unwrap();
        assert_eq!(h.inconsistencies().len(), 1);
        let h = CaptureHeader::parse(r#"{"proto_version":1,"streaming":"on","two_phase":true}"#)
            .unwrap();
        assert_eq!(h.inconsistencies().len(), 2);
    }
}
