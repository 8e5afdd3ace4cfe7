//! The next logical offset of every consume queue, as the writer assigns them.
//!
//! Keyed by topic, then queue id, so that the send path looks a queue up by `&str` without
//! building a `(String, i32)` key (two string copies a message in callgrind).

use rmq_common::FastMap;

#[derive(Debug, Default)]
pub(super) struct QueueOffsets {
    topics: FastMap<String, FastMap<i32, i64>>,
}

impl QueueOffsets {
    /// The offset the next message of the queue gets (0 for a queue never written).
    pub fn next(&self, topic: &str, queue_id: i32) -> i64 {
        self.topics
            .get(topic)
            .and_then(|qs| qs.get(&queue_id))
            .copied()
            .unwrap_or(0)
    }

    /// Hands out the queue's next offset and moves it on by one.
    pub fn take(&mut self, topic: &str, queue_id: i32) -> i64 {
        let qs = match self.topics.get_mut(topic) {
            Some(qs) => qs,
            None => self.topics.entry(topic.to_string()).or_default(),
        };
        let next = qs.entry(queue_id).or_insert(0);
        *next += 1;
        *next - 1
    }

    pub fn set(&mut self, topic: &str, queue_id: i32, next: i64) {
        match self.topics.get_mut(topic) {
            Some(qs) => {
                qs.insert(queue_id, next);
            }
            None => {
                self.topics
                    .entry(topic.to_string())
                    .or_default()
                    .insert(queue_id, next);
            }
        }
    }

    /// Moves the queue's next offset to at least `next`.
    pub fn raise(&mut self, topic: &str, queue_id: i32, next: i64) {
        let cur = self.next(topic, queue_id);
        if next > cur || !self.contains(topic, queue_id) {
            self.set(topic, queue_id, next.max(cur));
        }
    }

    fn contains(&self, topic: &str, queue_id: i32) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|qs| qs.contains_key(&queue_id))
    }

    pub fn remove_topic(&mut self, topic: &str) {
        self.topics.remove(topic);
    }

    pub fn clear(&mut self) {
        self.topics.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_per_queue() {
        let mut q = QueueOffsets::default();
        assert_eq!(q.next("T", 0), 0);
        q.set("T", 0, 4);
        assert_eq!(q.take("T", 0), 4);
        q.raise("T", 0, 3);
        q.raise("T", 1, 0);
        q.raise("U", 2, 7);
        assert_eq!((q.next("T", 0), q.next("T", 1), q.next("U", 2)), (5, 0, 7));
        q.remove_topic("T");
        assert_eq!(q.next("T", 0), 0);
        q.clear();
        assert_eq!(q.next("U", 2), 0);
    }
}
