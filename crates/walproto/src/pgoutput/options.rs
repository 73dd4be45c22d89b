//! The vocabulary of pgoutput's `START_REPLICATION` options and the one table of what each
//! needs: which server release and which protocol version.
//!
//! Every layer speaks these types: walconn sends [`Options`], walstream's builder fills a
//! [`Request`] and negotiates it against the server with [`Request::negotiate`], the CLI parses
//! [`Streaming`] and [`OriginFilter`] from its arguments with [`FromStr`], and the capture
//! header stores them. The rules live in [`RULES`] and [`PROTOCOL_RELEASES`]; nothing else
//! knows a release number.
//!
//! ```
//! use walproto::pgoutput::{ProtocolVersion, Request, Streaming};
//!
//! // The defaults: the highest the server has.
//! let agreed = Request::default().negotiate(150_004)?;
//! assert_eq!(agreed.proto_version, ProtocolVersion::V3);
//! assert_eq!(agreed.streaming, Streaming::On);
//! // Asking for more than the server has names the release it needs.
//! let refused = Request { streaming: Some(Streaming::Parallel), ..Request::default() }
//!     .negotiate(150_004)
//!     .unwrap_err();
//! assert_eq!(refused.to_string(), "streaming \"parallel\" needs PostgreSQL 16");
//! # Ok::<(), walproto::pgoutput::Refusal>(())
//! ```

use core::fmt;
use core::str::FromStr;

use super::ProtocolVersion;

/// The pgoutput `streaming` option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Streaming {
    /// `off`: transactions are sent whole at commit.
    #[default]
    Off,
    /// `on`: large in-progress transactions are streamed in blocks (protocol 2+).
    On,
    /// `parallel`: as `On`, and Stream Abort carries the abort LSN and time (protocol 4+).
    Parallel,
}

impl Streaming {
    /// Every mode, in the order of their introduction.
    pub const ALL: [Streaming; 3] = [Streaming::Off, Streaming::On, Streaming::Parallel];

    /// The option's value as `START_REPLICATION` spells it (`off`, `on`, `parallel`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Streaming::Off => "off",
            Streaming::On => "on",
            Streaming::Parallel => "parallel",
        }
    }
}

impl fmt::Display for Streaming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Streaming {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Streaming::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(UnknownValue {
                option: "streaming",
                expected: "off, on or parallel",
            })
    }
}

/// The pgoutput `origin` option: which changes to send by replication origin (PostgreSQL 16+).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum OriginFilter {
    /// `any`: changes of any origin.
    Any,
    /// `none`: only changes without an origin (made locally, not replicated in).
    None,
}

impl OriginFilter {
    /// Both filters.
    pub const ALL: [OriginFilter; 2] = [OriginFilter::Any, OriginFilter::None];

    /// The option's value as `START_REPLICATION` spells it (`any`, `none`).
    pub const fn as_str(self) -> &'static str {
        match self {
            OriginFilter::Any => "any",
            OriginFilter::None => "none",
        }
    }
}

impl fmt::Display for OriginFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OriginFilter {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OriginFilter::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or(UnknownValue {
                option: "origin",
                expected: "any or none",
            })
    }
}

/// A value that is not one of an option's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The option.
    pub option: &'static str,
    /// Its values, for the message.
    pub expected: &'static str,
}

impl fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is one of {}", self.option, self.expected)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for UnknownValue {}

/// The release (major version) that introduced each protocol version, oldest first.
pub const PROTOCOL_RELEASES: [(ProtocolVersion, u32); 4] = [
    (ProtocolVersion::V1, 10),
    (ProtocolVersion::V2, 14),
    (ProtocolVersion::V3, 15),
    (ProtocolVersion::V4, 16),
];

/// An option whose use depends on the server and the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// `binary` column values.
    Binary,
    /// `messages`: logical decoding messages.
    Messages,
    /// `streaming = on` (or more).
    Streaming,
    /// `streaming = parallel`.
    ParallelStreaming,
    /// `two_phase`.
    TwoPhase,
    /// `origin`.
    Origin,
}

/// What one [`Feature`] needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The feature.
    pub feature: Feature,
    /// How messages name it.
    pub name: &'static str,
    /// The first PostgreSQL release (major version) that has it.
    pub release: u32,
    /// The lowest protocol version it works with.
    pub protocol: ProtocolVersion,
}

const BINARY: Rule = Rule {
    feature: Feature::Binary,
    name: "binary",
    release: 14,
    protocol: ProtocolVersion::V1,
};
const MESSAGES: Rule = Rule {
    feature: Feature::Messages,
    name: "messages",
    release: 14,
    protocol: ProtocolVersion::V1,
};
const STREAMING: Rule = Rule {
    feature: Feature::Streaming,
    name: "streaming",
    release: 14,
    protocol: ProtocolVersion::V2,
};
const PARALLEL_STREAMING: Rule = Rule {
    feature: Feature::ParallelStreaming,
    name: "streaming \"parallel\"",
    release: 16,
    protocol: ProtocolVersion::V4,
};
const TWO_PHASE: Rule = Rule {
    feature: Feature::TwoPhase,
    name: "two_phase",
    release: 15,
    protocol: ProtocolVersion::V3,
};
const ORIGIN: Rule = Rule {
    feature: Feature::Origin,
    name: "the origin option",
    release: 16,
    protocol: ProtocolVersion::V1,
};

/// The table: each feature, the release that introduced it and the protocol it needs.
pub const RULES: [Rule; 6] = [
    BINARY,
    MESSAGES,
    STREAMING,
    PARALLEL_STREAMING,
    TWO_PHASE,
    ORIGIN,
];

impl Feature {
    /// The feature's row of [`RULES`].
    pub const fn rule(self) -> Rule {
        match self {
            Feature::Binary => BINARY,
            Feature::Messages => MESSAGES,
            Feature::Streaming => STREAMING,
            Feature::ParallelStreaming => PARALLEL_STREAMING,
            Feature::TwoPhase => TWO_PHASE,
            Feature::Origin => ORIGIN,
        }
    }
}

/// The major version of a `server_version_num` (`170002` -> 17).
pub const fn major_of(server_version_num: u32) -> u32 {
    server_version_num / 10_000
}

impl ProtocolVersion {
    /// The highest protocol a server of `server_version_num` speaks (1 before PostgreSQL 14).
    pub fn max_for_server(server_version_num: u32) -> ProtocolVersion {
        let major = major_of(server_version_num);
        PROTOCOL_RELEASES
            .into_iter()
            .rev()
            .find(|&(_, release)| release <= major)
            .map(|(v, _)| v)
            .unwrap_or(ProtocolVersion::V1)
    }

    /// The PostgreSQL release (major version) that introduced this protocol version.
    pub fn release(self) -> u32 {
        PROTOCOL_RELEASES
            .into_iter()
            .find(|&(v, _)| v == self)
            .map_or(10, |(_, release)| release)
    }
}

/// Why options cannot be used: what needs what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server is older than the release that introduced the option or protocol.
    NeedsRelease {
        /// The option (`streaming "parallel"`, `pgoutput protocol 4`, ...).
        what: &'static str,
        /// The PostgreSQL release (major version) it needs.
        release: u32,
    },
    /// The option does not exist in the protocol version chosen.
    NeedsProtocol {
        /// The option.
        what: &'static str,
        /// The lowest protocol version that has it.
        protocol: ProtocolVersion,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NeedsRelease { what, release } => {
                write!(f, "{what} needs PostgreSQL {release}")
            }
            Refusal::NeedsProtocol { what, protocol } => write!(
                f,
                "{what} needs proto_version {} or later",
                protocol.number()
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Refusal {}

/// The options `START_REPLICATION ... LOGICAL` is sent with (the publications aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// `proto_version`.
    pub proto_version: ProtocolVersion,
    /// `streaming` (sent from protocol 2 on; protocol 1 has no such option).
    pub streaming: Streaming,
    /// `binary`.
    pub binary: bool,
    /// `messages`.
    pub messages: bool,
    /// `two_phase`.
    pub two_phase: bool,
    /// `origin`, if sent.
    pub origin: Option<OriginFilter>,
}

impl Options {
    /// Protocol `proto_version` and nothing else: no streaming, text values, no messages, no
    /// two-phase decoding, no origin filter.
    pub const fn new(proto_version: ProtocolVersion) -> Self {
        Options {
            proto_version,
            streaming: Streaming::Off,
            binary: false,
            messages: false,
            two_phase: false,
            origin: None,
        }
    }

    /// The features these options use.
    pub fn features(&self) -> impl Iterator<Item = Feature> {
        [
            (self.binary, Feature::Binary),
            (self.messages, Feature::Messages),
            (self.streaming != Streaming::Off, Feature::Streaming),
            (
                self.streaming == Streaming::Parallel,
                Feature::ParallelStreaming,
            ),
            (self.two_phase, Feature::TwoPhase),
            (self.origin.is_some(), Feature::Origin),
        ]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
    }

    /// Each feature used that the protocol version does not have. PostgreSQL refuses such
    /// options at `START_REPLICATION`.
    pub fn protocol_refusals(&self) -> impl Iterator<Item = Refusal> {
        let version = self.proto_version;
        self.features()
            .map(Feature::rule)
            .filter(move |r| r.protocol > version)
            .map(|r| Refusal::NeedsProtocol {
                what: r.name,
                protocol: r.protocol,
            })
    }

    /// The first thing a server of `server_version_num` cannot do with these options: the
    /// protocol version, then each feature.
    pub fn check_server(&self, server_version_num: u32) -> Result<(), Refusal> {
        let major = major_of(server_version_num);
        let protocol = self.proto_version.release();
        if protocol > major {
            return Err(Refusal::NeedsRelease {
                what: protocol_name(self.proto_version),
                release: protocol,
            });
        }
        match self
            .features()
            .map(Feature::rule)
            .find(|r| r.release > major)
        {
            Some(r) => Err(Refusal::NeedsRelease {
                what: r.name,
                release: r.release,
            }),
            None => Ok(()),
        }
    }
}

impl From<ProtocolVersion> for Options {
    /// [`Options::new`]: the protocol version and nothing else.
    fn from(version: ProtocolVersion) -> Self {
        Options::new(version)
    }
}

/// `pgoutput protocol N`, for messages.
fn protocol_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V1 => "pgoutput protocol 1",
        ProtocolVersion::V2 => "pgoutput protocol 2",
        ProtocolVersion::V3 => "pgoutput protocol 3",
        ProtocolVersion::V4 => "pgoutput protocol 4",
    }
}

/// What a client asks for; `None` leaves the choice to [`negotiate`](Request::negotiate): the
/// highest the server has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Request {
    /// The protocol version, or the server's highest.
    pub proto_version: Option<ProtocolVersion>,
    /// The streaming mode, or the most the protocol version allows (`parallel` with 4, `on`
    /// with 2 and 3).
    pub streaming: Option<Streaming>,
    /// Binary column values.
    pub binary: bool,
    /// Logical decoding messages.
    pub messages: bool,
    /// Two-phase decoding.
    pub two_phase: bool,
    /// The origin filter. [`OriginFilter::Any`] is what a server before PostgreSQL 16 does
    /// anyway: there it is accepted and not sent.
    pub origin: Option<OriginFilter>,
}

impl Request {
    /// Contradictions that no server can resolve: an option the requested protocol version
    /// does not have.
    pub fn check(&self) -> Result<(), Refusal> {
        match self.proto_version {
            Some(v) => self
                .with_protocol(v)
                .protocol_refusals()
                .next()
                .map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    /// The options for a server of `server_version_num`: the highest it supports where the
    /// request leaves the choice, or the first thing requested that it cannot do.
    pub fn negotiate(&self, server_version_num: u32) -> Result<Options, Refusal> {
        self.check()?;
        let max = ProtocolVersion::max_for_server(server_version_num);
        let version = self.proto_version.unwrap_or(max);
        let mut options = self.with_protocol(version);
        if self.streaming.is_none() {
            options.streaming = Streaming::ALL
                .into_iter()
                .rev()
                .find(|&s| {
                    let o = Options {
                        streaming: s,
                        ..options
                    };
                    o.protocol_refusals().next().is_none()
                })
                .unwrap_or(Streaming::Off);
        }
        if self.origin == Some(OriginFilter::Any)
            && Feature::Origin.rule().release > major_of(server_version_num)
        {
            options.origin = None;
        }
        options.check_server(server_version_num)?;
        options.protocol_refusals().next().map_or(Ok(options), Err)
    }

    /// The request's options under protocol `version` (streaming off where unset).
    fn with_protocol(&self, version: ProtocolVersion) -> Options {
        Options {
            proto_version: version,
            streaming: self.streaming.unwrap_or(Streaming::Off),
            binary: self.binary,
            messages: self.messages,
            two_phase: self.two_phase,
            origin: self.origin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn every_feature_has_one_rule() {
        for r in RULES {
            assert_eq!(RULES.iter().filter(|o| o.feature == r.feature).count(), 1);
            assert_eq!(r.feature.rule(), r);
        }
    }

    #[test]
    fn the_highest_protocol_of_each_release() {
        for (num, v) in [
            (180_001, ProtocolVersion::V4),
            (160_003, ProtocolVersion::V4),
            (150_010, ProtocolVersion::V3),
            (140_000, ProtocolVersion::V2),
            (130_000, ProtocolVersion::V1),
            (90_600, ProtocolVersion::V1),
        ] {
            assert_eq!(ProtocolVersion::max_for_server(num), v, "{num}");
        }
        assert_eq!(ProtocolVersion::V3.release(), 15);
    }

    #[test]
    fn defaults_take_the_most_the_server_has() {
        for (num, v, s) in [
            (170_000, ProtocolVersion::V4, Streaming::Parallel),
            (150_000, ProtocolVersion::V3, Streaming::On),
            (140_000, ProtocolVersion::V2, Streaming::On),
            (130_000, ProtocolVersion::V1, Streaming::Off),
        ] {
            let o = Request::default().negotiate(num).unwrap();
            assert_eq!((o.proto_version, o.streaming), (v, s), "{num}");
        }
        let r = Request {
            proto_version: Some(ProtocolVersion::V3),
            ..Request::default()
        };
        assert_eq!(r.negotiate(170_000).unwrap().streaming, Streaming::On);
    }

    #[test]
    fn refusals_name_what_is_needed() {
        let on_15 = |r: Request| r.negotiate(150_004).unwrap_err().to_string();
        assert_eq!(
            on_15(Request {
                proto_version: Some(ProtocolVersion::V4),
                ..Request::default()
            }),
            "pgoutput protocol 4 needs PostgreSQL 16"
        );
        assert_eq!(
            on_15(Request {
                origin: Some(OriginFilter::None),
                ..Request::default()
            }),
            "the origin option needs PostgreSQL 16"
        );
        let two_phase_on_14 = Request {
            two_phase: true,
            ..Request::default()
        };
        assert_eq!(
            two_phase_on_14.negotiate(140_000).unwrap_err().to_string(),
            "two_phase needs PostgreSQL 15"
        );
        // `any` is what an older server does anyway: accepted, not sent.
        let any = Request {
            origin: Some(OriginFilter::Any),
            ..Request::default()
        };
        assert_eq!(any.negotiate(150_000).unwrap().origin, None);
        assert_eq!(
            any.negotiate(160_000).unwrap().origin,
            Some(OriginFilter::Any)
        );
    }

    #[test]
    fn contradictions_are_refused_without_a_server() {
        let r = |v, streaming, two_phase| Request {
            proto_version: Some(v),
            streaming: Some(streaming),
            two_phase,
            ..Request::default()
        };
        assert!(r(ProtocolVersion::V3, Streaming::Parallel, false)
            .check()
            .is_err());
        assert!(r(ProtocolVersion::V1, Streaming::On, false)
            .check()
            .is_err());
        assert!(r(ProtocolVersion::V2, Streaming::On, true).check().is_err());
        assert!(r(ProtocolVersion::V4, Streaming::Parallel, true)
            .check()
            .is_ok());
        let refusals: Vec<_> = Options {
            streaming: Streaming::On,
            two_phase: true,
            ..Options::new(ProtocolVersion::V1)
        }
        .protocol_refusals()
        .collect();
        assert_eq!(refusals.len(), 2);
    }

    #[test]
    fn values_round_trip_through_their_names() {
        for s in Streaming::ALL {
            assert_eq!(s.as_str().parse::<Streaming>(), Ok(s));
        }
        for o in OriginFilter::ALL {
            assert_eq!(o.as_str().parse::<OriginFilter>(), Ok(o));
        }
        assert!("yes".parse::<Streaming>().is_err());
        assert!("local".parse::<OriginFilter>().is_err());
    }
}
