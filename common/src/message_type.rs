//! The topic attribute `message.type` and what each value admits.

/// RocketMQ 5 topic message types (`TopicMessageType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicMessageType {
    Unspecified,
    Normal,
    Fifo,
    Delay,
    Transaction,
    Mixed,
}

impl TopicMessageType {
    /// Parses the attribute value; a topic without the attribute counts as NORMAL.
    pub fn from_attribute(value: Option<&str>) -> Self {
        match value {
            None => Self::Normal,
            Some("NORMAL") => Self::Normal,
            Some("FIFO") => Self::Fifo,
            Some("DELAY") => Self::Delay,
            Some("TRANSACTION") => Self::Transaction,
            Some("MIXED") => Self::Mixed,
            Some(_) => Self::Unspecified,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "UNSPECIFIED",
            Self::Normal => "NORMAL",
            Self::Fifo => "FIFO",
            Self::Delay => "DELAY",
            Self::Transaction => "TRANSACTION",
            Self::Mixed => "MIXED",
        }
    }

    /// The lower-case value used as the `message_type` metric label.
    pub fn metrics_value(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Delay => "delay",
            Self::Transaction => "transaction",
            _ => "normal",
        }
    }
}

/// The attribute key that carries the type.
pub const MESSAGE_TYPE_ATTRIBUTE: &str = "message.type";
