//! Store-node errors. Each variant names the v2 `Code` it becomes at the protocol edge.

use rmq_proto::v2::Code;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("topic {0} does not exist")]
    TopicNotFound(String),
    #[error("consumer group {0} does not exist")]
    GroupNotFound(String),
    #[error("topic {0} is not writable")]
    NotWritable(String),
    #[error("topic {0} is not readable")]
    NotReadable(String),
    #[error("queue {queue} does not exist in topic {topic}")]
    NoSuchQueue { topic: String, queue: i32 },
    #[error("message body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("invalid receipt handle: {0}")]
    InvalidHandle(&'static str),
    #[error("illegal argument: {0}")]
    BadRequest(String),
    #[error("flush did not complete within {0} ms")]
    FlushTimeout(u64),
    #[error("this store node is a slave and does not accept writes")]
    NotMaster,
    #[error("no slave is connected and in sync; SYNC_MASTER refuses to acknowledge without one")]
    HaNotAvailable,
    #[error("the slave did not acknowledge within {0} ms")]
    SlaveTimeout(u64),
    #[error("store is shutting down")]
    ShuttingDown,
    /// Apache's wording (DefaultMessageStore#checkStoreStatus), which users search for; its proxy
    /// answers it with INTERNAL_SERVER_ERROR (#6951).
    #[error(
        "service not available now: the broker's disk is full ({0}); messages are refused until \
         space is back, reads go on"
    )]
    DiskFull(String),
    #[error("the next commitlog segment is not ready yet")]
    SegmentNotReady,
    #[error("{0}")]
    Refused(String),
    #[error("record encoding failed: {0}")]
    Record(#[from] rmq_common::record::RecordError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub fn code(&self) -> Code {
        match self {
            Self::TopicNotFound(_) => Code::TopicNotFound,
            Self::GroupNotFound(_) => Code::ConsumerGroupNotFound,
            Self::NotWritable(_) | Self::NotReadable(_) => Code::Forbidden,
            Self::NoSuchQueue { .. } | Self::BadRequest(_) => Code::BadRequest,
            Self::BodyTooLarge { .. } => Code::MessageBodyTooLarge,
            Self::InvalidHandle(_) => Code::InvalidReceiptHandle,
            Self::FlushTimeout(_) => Code::MasterPersistenceTimeout,
            Self::NotMaster => Code::Forbidden,
            Self::HaNotAvailable => Code::HaNotAvailable,
            Self::SlaveTimeout(_) => Code::SlavePersistenceTimeout,
            Self::ShuttingDown => Code::InternalServerError,
            Self::DiskFull(_) => Code::InternalServerError,
            Self::SegmentNotReady => Code::TooManyRequests,
            Self::Refused(_) => Code::InternalServerError,
            Self::Record(_) => Code::BadRequest,
            Self::Io(_) => Code::InternalServerError,
        }
    }
}

impl StoreError {
    /// Whether the request was refused before anything was written, so another replica group
    /// may take it.
    pub fn nothing_written(&self) -> bool {
        matches!(
            self,
            Self::DiskFull(_) | Self::HaNotAvailable | Self::SegmentNotReady | Self::NotMaster
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;
