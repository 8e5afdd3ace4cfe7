//! Receipt handles. They keep RocketMQ's space-separated shape
//! `token retrieveTime invisibleTime reviveQid topicType brokerName queueId queueOffset commitLogOffset`
//! but the first field carries our delivery token (RocketMQ puts the CK start offset there).
//! The handle is self-describing: any proxy can route an ack or an extension to the store group
//! that issued it, so proxies keep no per-message state.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptHandle {
    /// Unique per delivery; the store accepts an ack only for the current delivery's token.
    pub token: u64,
    pub pop_time_ms: i64,
    pub invisible_ms: i64,
    pub broker_name: String,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed receipt handle")]
pub struct MalformedHandle;

impl ReceiptHandle {
    pub fn encode(&self) -> String {
        self.to_string()
    }

    pub fn decode(s: &str) -> Result<Self, MalformedHandle> {
        let f: Vec<&str> = s.split(' ').collect();
        if f.len() != 9 || f[5].is_empty() {
            return Err(MalformedHandle);
        }
        let n = |i: usize| f[i].parse::<i64>().map_err(|_| MalformedHandle);
        let token = f[0].parse::<u64>().map_err(|_| MalformedHandle)?;
        let queue_id = f[6].parse::<i32>().map_err(|_| MalformedHandle)?;
        let h = Self {
            token,
            pop_time_ms: n(1)?,
            invisible_ms: n(2)?,
            broker_name: f[5].to_string(),
            queue_id,
            queue_offset: n(7)?,
            commit_log_offset: n(8)?,
        };
        n(3)?;
        n(4)?;
        if h.queue_id < 0 || h.queue_offset < 0 || h.invisible_ms < 0 {
            return Err(MalformedHandle);
        }
        Ok(h)
    }

    /// When the message becomes visible again unless acked or extended.
    pub fn next_visible_ms(&self) -> i64 {
        self.pop_time_ms.saturating_add(self.invisible_ms)
    }
}

impl fmt::Display for ReceiptHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} 0 0 {} {} {} {}",
            self.token,
            self.pop_time_ms,
            self.invisible_ms,
            self.broker_name,
            self.queue_id,
            self.queue_offset,
            self.commit_log_offset
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let h = ReceiptHandle {
            token: 42,
            pop_time_ms: 1000,
            invisible_ms: 30000,
            broker_name: "broker-a".into(),
            queue_id: 3,
            queue_offset: 17,
            commit_log_offset: 4096,
        };
        assert_eq!(ReceiptHandle::decode(&h.encode()), Ok(h));
        for bad in [
            "",
            "garbage",
            "1 2 3 4 5 b 7 8",
            "x 2 3 0 0 b 1 2 3",
            "1 2 3 0 0  1 2 3",
        ] {
            assert!(ReceiptHandle::decode(bad).is_err(), "{bad}");
        }
    }
}
