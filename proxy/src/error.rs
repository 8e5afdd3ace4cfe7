//! Proxy errors, each with its v2 code. [`to_status`] is the one place a code is shaped for the
//! client that will read it.

use crate::context::ClientContext;
use rmq_proto::v2::{Code, Status};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("x-mq-client-id is required")]
    ClientIdRequired,
    #[error("{1}")]
    Invalid(Code, String),
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    #[error("{message}")]
    Store { code: i32, message: String },
    #[error("store node unavailable: {0}")]
    StoreUnavailable(String),
    /// The connection itself failed: nothing reached the store node.
    #[error("store node unreachable: {0}")]
    StoreUnreachable(String),
    #[error("store node did not answer in time")]
    StoreTimeout,
    #[error("{0}")]
    NotImplemented(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn invalid(code: Code, msg: impl Into<String>) -> Self {
        Self::Invalid(code, msg.into())
    }

    pub fn code(&self) -> i32 {
        match self {
            Self::ClientIdRequired => Code::ClientIdRequired as i32,
            Self::Invalid(c, _) => *c as i32,
            Self::TopicNotFound(_) => Code::TopicNotFound as i32,
            Self::Store { code, .. } => *code,
            Self::StoreUnavailable(_) | Self::StoreUnreachable(_) => {
                Code::InternalServerError as i32
            }
            Self::StoreTimeout => Code::ProxyTimeout as i32,
            Self::NotImplemented(_) => Code::NotImplemented as i32,
            Self::Forbidden(_) => Code::Forbidden as i32,
            Self::Internal(_) => Code::InternalServerError as i32,
        }
    }
}

impl From<tonic::Status> for ProxyError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::DeadlineExceeded => Self::StoreTimeout,
            tonic::Code::Unavailable => Self::StoreUnreachable(s.message().to_string()),
            _ => Self::StoreUnavailable(s.message().to_string()),
        }
    }
}

/// Codes the Rust 5.0.0 client does not know (it panics on them), and what it gets instead.
fn downgrade_for_old_rust(code: i32) -> i32 {
    match code {
        40019 | 40020 | 40021 | 41302 => Code::BadRequest as i32,
        40404 => Code::NotFound as i32,
        42901 | 42902 => Code::TooManyRequests as i32,
        c if Code::try_from(c).is_err() => Code::InternalServerError as i32,
        c => c,
    }
}

/// Shapes a code and message for this client.
pub fn status(ctx: &ClientContext, code: i32, message: impl Into<String>) -> Status {
    let code = if ctx.is_old_rust() {
        downgrade_for_old_rust(code)
    } else {
        code
    };
    Status {
        code,
        message: message.into(),
    }
}

pub fn to_status(ctx: &ClientContext, e: &ProxyError) -> Status {
    status(ctx, e.code(), e.to_string())
}

pub fn ok_status() -> Status {
    Status {
        code: Code::Ok as i32,
        message: "OK".into(),
    }
}
