//! Appends: messages (all or nothing per request, acknowledged per the flush and replication
//! mode) and state records (under the lock of the part they change).

use super::{AppendResult, Durability, NewMessage, Store, remember};
use crate::config::BrokerRole;
use crate::consumequeue::{CqEntry, PendingDispatch};
use crate::error::{Result, StoreError};
use crate::state::catalog::Catalog;
use crate::state::pop::PopPart;
use crate::state::{Kind, STATE_TOPIC, record};
use rmq_common::java::string_hash_code;
use rmq_common::keys;
use rmq_common::record::{RecordInput, encode_properties, encoded_len};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a send waits for the allocator to prepare a segment before giving up.
const SEGMENT_WAIT: Duration = Duration::from_secs(3);

impl Store {
    /// Appends a batch of messages (all or nothing), acknowledging per the flush mode.
    pub async fn append(&self, msgs: Vec<NewMessage>) -> Result<Vec<AppendResult>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_slave() {
            return Err(StoreError::NotMaster);
        }
        if let Some(why) = self.disk_full() {
            return Err(StoreError::DiskFull(why));
        }
        if self.cfg.broker_role == BrokerRole::SyncMaster
            && !self.replicas.available(self.log.published())
        {
            // Refused before anything is written, so the proxy may safely try another group.
            return Err(StoreError::HaNotAvailable);
        }
        let mut write_queues: HashMap<&str, i32> = HashMap::new();
        {
            let cat = self.state.catalog.read();
            for m in &msgs {
                let t = cat
                    .topics
                    .get(&m.topic)
                    .ok_or_else(|| StoreError::TopicNotFound(m.topic.clone()))?;
                if !t.writable() || self.cfg.broker_permission & 2 == 0 {
                    return Err(StoreError::NotWritable(m.topic.clone()));
                }
                if m.body.len() > self.cfg.max_message_size {
                    return Err(StoreError::BodyTooLarge {
                        size: m.body.len(),
                        limit: self.cfg.max_message_size,
                    });
                }
                if m.queue_id >= t.write_queue_nums {
                    return Err(StoreError::NoSuchQueue {
                        topic: m.topic.clone(),
                        queue: m.queue_id,
                    });
                }
                write_queues.insert(&m.topic, t.write_queue_nums.max(1));
            }
        }
        // Encoded outside the writer lock: properties do not depend on where a message lands.
        let props: Vec<Vec<u8>> = msgs
            .iter()
            .map(|m| encode_properties(m.properties.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
            .collect();
        let mut attempts = 0;
        let (results, end) = loop {
            attempts += 1;
            match self.try_append(&msgs, &props, &write_queues) {
                Err(StoreError::SegmentNotReady) if attempts < 3 => {
                    let base = self.segment_boundary();
                    if !self.log.alloc.wait_ready(base, SEGMENT_WAIT).await
                        && let Some(why) = self.disk_full()
                    {
                        return Err(StoreError::DiskFull(why));
                    }
                }
                other => break other?,
            }
        };
        self.appended.notify_waiters();
        self.snapshot_if_written_enough();
        self.await_durable(end).await?;
        self.stats
            .put_total
            .fetch_add(msgs.len() as u64, Ordering::Relaxed);
        for m in &msgs {
            self.metrics.message_in(m);
        }
        Ok(results)
    }

    /// Where the next segment starts if the tail needs one.
    fn segment_boundary(&self) -> i64 {
        let w = self.writer.lock();
        self.log.segment_end(w.tail.pos).unwrap_or(w.tail.pos)
    }

    fn try_append(
        &self,
        msgs: &[NewMessage],
        props: &[Vec<u8>],
        write_queues: &HashMap<&str, i32>,
    ) -> Result<(Vec<AppendResult>, i64)> {
        let born: Vec<SocketAddrV4> = msgs
            .iter()
            .map(|m| {
                m.born_host
                    .parse()
                    .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
            })
            .collect();
        let inputs: Vec<RecordInput<'_>> = msgs
            .iter()
            .zip(props)
            .zip(&born)
            .map(|((m, p), b)| RecordInput {
                topic: &m.topic,
                queue_id: m.queue_id,
                flag: m.flag,
                sys_flag: m.sys_flag,
                born_timestamp: m.born_timestamp,
                born_host: *b,
                store_host: self.store_host,
                reconsume_times: 0,
                prepared_tx_offset: 0,
                body: &m.body,
                properties: p,
            })
            .collect();
        let sizes: Vec<usize> = inputs.iter().map(encoded_len).collect();
        let mut results = Vec::with_capacity(msgs.len());
        let mut w = self.writer.lock();
        if self.log.needs_segments(&w.tail, &sizes) {
            return Err(StoreError::SegmentNotReady);
        }
        let store_ts = self.clock.now();
        for (m, mut input) in msgs.iter().zip(inputs) {
            let queue_id = if m.queue_id >= 0 {
                m.queue_id
            } else {
                let n = write_queues.get(m.topic.as_str()).copied().unwrap_or(1);
                let rr = match w.round_robin.get_mut(&m.topic) {
                    Some(rr) => rr,
                    None => w.round_robin.entry(m.topic.clone()).or_default(),
                };
                *rr = rr.wrapping_add(1);
                (*rr % n as usize) as i32
            };
            input.queue_id = queue_id;
            let qoff = w
                .queue_next
                .get(&(m.topic.clone(), queue_id))
                .copied()
                .unwrap_or(0);
            let a = self
                .log
                .append(&mut w.tail, &input, qoff, store_ts, false)?;
            remember(&mut w.recent, a.phys, a.size);
            w.queue_next.insert((m.topic.clone(), queue_id), qoff + 1);
            let tags = m
                .properties
                .iter()
                .find(|(k, _)| k == keys::TAGS)
                .map(|(_, v)| i64::from(string_hash_code(v)))
                .unwrap_or(0);
            w.pending.push_back(PendingDispatch {
                topic: m.topic.clone(),
                queue_id,
                queue_offset: qoff,
                entry: CqEntry {
                    phys: a.phys,
                    size: a.size as u32,
                    tags_code: tags,
                },
            });
            results.push(AppendResult {
                queue_id,
                queue_offset: qoff,
                phys: a.phys,
            });
        }
        self.log.publish(&w.tail);
        let end = w.tail.pos;
        if !self.sync_flush() {
            self.dispatch_pending(&mut w, end);
        }
        Ok((results, end))
    }

    /// Appends a state record to the log; the caller holds the lock of the part it changes.
    /// Returns where the record starts and ends.
    fn append_state_record(&self, kind: &Kind) -> Result<(i64, i64)> {
        let body = record::encode(kind);
        let mut w = self.writer.lock();
        let store_ts = self.clock.now();
        let input = RecordInput {
            topic: STATE_TOPIC,
            queue_id: 0,
            flag: 0,
            sys_flag: 0,
            born_timestamp: store_ts,
            born_host: self.store_host,
            store_host: self.store_host,
            reconsume_times: 0,
            prepared_tx_offset: 0,
            body: &body,
            properties: &[],
        };
        let a = self.log.append(&mut w.tail, &input, 0, store_ts, true)?;
        remember(&mut w.recent, a.phys, a.size);
        self.log.publish(&w.tail);
        drop(w);
        self.state_dirty.store(true, Ordering::Release);
        self.appended.notify_waiters();
        Ok((a.phys, a.phys + a.size as i64))
    }

    /// Makes a change to a POP part (whose lock the caller holds): into the log on a master,
    /// into the handover log on a slave.
    pub(super) fn change_part(&self, part: &mut PopPart, kind: Kind) -> Result<Durability> {
        let now = self.clock.now();
        if self.is_slave() {
            let rx = self.handover.push(record::encode(&kind));
            let tok = part.apply(&kind, now);
            self.state.tokens.observe(tok);
            return Ok(Durability::Handover(rx));
        }
        let (_, end) = self.append_state_record(&kind)?;
        let tok = part.apply(&kind, now);
        part.applied_to = end;
        self.state.tokens.observe(tok);
        Ok(Durability::Log(end))
    }

    /// Makes a catalog change (the caller holds the catalog's write lock). A slave may only
    /// create consumer groups on its own.
    pub(super) fn change_catalog(&self, cat: &mut Catalog, kind: Kind) -> Result<Durability> {
        if self.is_slave() {
            if !record::is_consumption(&kind) {
                return Err(StoreError::NotMaster);
            }
            let rx = self.handover.push(record::encode(&kind));
            cat.apply(&kind);
            return Ok(Durability::Handover(rx));
        }
        let (start, end) = self.append_state_record(&kind)?;
        cat.apply(&kind);
        cat.applied_to = end;
        match &kind {
            Kind::TopicDelete(t) => self.state.pops.remove_where(start, |(_, pt)| pt == t),
            Kind::GroupDelete(g) => self.state.pops.remove_where(start, |(pg, _)| pg == g),
            _ => {}
        }
        Ok(Durability::Log(end))
    }
}
