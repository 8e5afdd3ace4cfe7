//! Who is calling: the client headers every official SDK sends.

use crate::error::ProxyError;
use std::sync::LazyLock;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap};

#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    pub client_id: String,
    pub language: String,
    pub version: String,
    /// Time left before the client's deadline (`grpc-timeout`), if it sent one.
    pub deadline_ms: Option<i64>,
}

/// Parsed once: looking a header up by `&str` validates and lowercases the name on every call.
static CLIENT_ID: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("x-mq-client-id"));
static LANGUAGE: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("x-mq-language"));
static VERSION: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("x-mq-client-version"));
static TIMEOUT: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static("grpc-timeout"));

impl ClientContext {
    pub fn from_metadata(md: &MetadataMap) -> Self {
        let get = |k: &MetadataKey<Ascii>| {
            md.get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        Self {
            client_id: get(&CLIENT_ID),
            language: get(&LANGUAGE),
            version: get(&VERSION),
            deadline_ms: md
                .get(&*TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_grpc_timeout),
        }
    }

    /// Whether the client sent its id, without building the context.
    pub fn has_client_id(md: &MetadataMap) -> bool {
        md.get(&*CLIENT_ID)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| !v.trim().is_empty())
    }

    /// Context with the client id required, as Apache's proxy requires it on every RPC.
    pub fn require(md: &MetadataMap) -> Result<Self, (Self, ProxyError)> {
        let c = Self::from_metadata(md);
        if c.client_id.trim().is_empty() {
            Err((c, ProxyError::ClientIdRequired))
        } else {
            Ok(c)
        }
    }

    /// The Rust 5.0.0 crate panics on status codes it does not know.
    pub fn is_old_rust(&self) -> bool {
        self.language.eq_ignore_ascii_case("RUST") && version_below(&self.version, (5, 1, 0))
    }

    /// Clients older than 5.0.3 expect BAD_REQUEST where newer ones get ILLEGAL_POLLING_TIME.
    pub fn before_5_0_3(&self) -> bool {
        version_below(&self.version, (5, 0, 3))
    }
}

fn version_below(v: &str, than: (u32, u32, u32)) -> bool {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let parsed = (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    );
    !v.is_empty() && parsed < than
}

/// Parses gRPC's `grpc-timeout` header (`<digits><unit>`) into milliseconds.
pub fn parse_grpc_timeout(v: &str) -> Option<i64> {
    if v.len() < 2 {
        return None;
    }
    let (n, unit) = v.split_at(v.len() - 1);
    let n: i64 = n.parse().ok()?;
    Some(match unit {
        "H" => n.saturating_mul(3_600_000),
        "M" => n.saturating_mul(60_000),
        "S" => n.saturating_mul(1000),
        "m" => n,
        "u" => n / 1000,
        "n" => n / 1_000_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_timeouts() {
        let c = ClientContext {
            language: "RUST".into(),
            version: "5.0.0".into(),
            ..Default::default()
        };
        assert!(c.is_old_rust() && c.before_5_0_3());
        let p = ClientContext {
            language: "PYTHON".into(),
            version: "5.1.2".into(),
            ..Default::default()
        };
        assert!(!p.is_old_rust() && !p.before_5_0_3());
        assert_eq!(parse_grpc_timeout("40S"), Some(40_000));
        assert_eq!(parse_grpc_timeout("22999m"), Some(22_999));
        assert_eq!(parse_grpc_timeout("x"), None);
    }
}
