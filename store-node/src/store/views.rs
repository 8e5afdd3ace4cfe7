//! Read-only views for mqadmin and metrics.

use super::Store;
use crate::error::{Result, StoreError};
use rmq_common::record::{POS_STORE_TIMESTAMP, RecordView};
use rmq_common::time::now_ms;
use std::sync::atomic::Ordering;

impl Store {
    /// Store time of the record at `phys` (0 when it is not readable).
    fn store_time_at(&self, phys: i64, size: u32) -> i64 {
        self.log
            .read(phys, (size as usize).min(POS_STORE_TIMESTAMP + 8))
            .filter(|b| b.len() >= POS_STORE_TIMESTAMP + 8)
            .map(|b| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[POS_STORE_TIMESTAMP..POS_STORE_TIMESTAMP + 8]);
                i64::from_be_bytes(a)
            })
            .unwrap_or(0)
    }

    /// Per queue: (queue id, min offset, max offset, last store time).
    pub fn topic_status(&self, topic: &str) -> Result<Vec<(i32, i64, i64, i64)>> {
        let n = self
            .topic(topic)
            .ok_or_else(|| StoreError::TopicNotFound(topic.to_string()))?;
        Ok((0..n.read_queue_nums.max(n.write_queue_nums))
            .map(|i| {
                let (min, max) = self.queues.bounds(topic, i);
                let last = self
                    .queues
                    .queue(topic, i)
                    .and_then(|q| q.get(max - 1))
                    .map(|e| self.store_time_at(e.phys, e.size))
                    .unwrap_or(0);
                (i, min, max, last)
            })
            .collect())
    }

    /// Per (topic, queue) of a group: broker offset, consumer offset, in-flight count, last pop.
    pub fn consumer_progress(
        &self,
        group: &str,
        topic_filter: &str,
    ) -> Vec<(String, i32, i64, i64, i64, i64)> {
        let mut rows = Vec::new();
        for ((g, t), part) in self.state.pops.all() {
            if g != group || (!topic_filter.is_empty() && t != topic_filter) {
                continue;
            }
            let nq = self
                .state
                .catalog
                .read()
                .topics
                .get(&t)
                .map(|c| c.read_queue_nums)
                .unwrap_or(0);
            let p = part.lock();
            for qid in 0..nq {
                let (min, max) = self.queues.bounds(&t, qid);
                let (commit, inflight, last) = p
                    .queues
                    .get(&qid)
                    .map(|q| {
                        (
                            q.commit_offset().max(min),
                            q.inflight.range(min..).count() as i64,
                            q.last_pop_ms,
                        )
                    })
                    .unwrap_or((min, 0, 0));
                rows.push((t.clone(), qid, max, commit, inflight, last));
            }
        }
        rows.sort();
        rows
    }

    /// Milliseconds since the oldest retained message was stored (Apache's "message reserve
    /// time"); 0 for an empty log.
    pub fn oldest_message_age_ms(&self) -> i64 {
        let min = self.log.min_offset();
        let Some(head) = self.log.read_raw(min, 4096) else {
            return 0;
        };
        match RecordView::parse(&head) {
            Ok(v) if v.store_timestamp > 0 => (now_ms() - v.store_timestamp).max(0),
            _ => 0,
        }
    }

    /// Bytes the log holds on disk (segments, reserved space included).
    pub fn storage_bytes(&self) -> i64 {
        self.log.segment_list().iter().map(|(b, e, _)| e - b).sum()
    }

    pub fn runtime_info(&self) -> Vec<(String, String)> {
        let (put_tps, get_tps) = self.stats.tps();
        let boot = self.stats.boot_ms.load(Ordering::Relaxed) as i64;
        let ha = self.ha_view();
        let r = &self.recovery;
        vec![
            (
                "brokerVersionDesc".into(),
                format!("V{}", env!("CARGO_PKG_VERSION").replace('.', "_")),
            ),
            ("brokerActive".into(), "true".into()),
            ("bootTimestamp".into(), boot.to_string()),
            ("runtime".into(), format!("{} ms", now_ms() - boot)),
            (
                "commitLogMinOffset".into(),
                self.log.min_offset().to_string(),
            ),
            (
                "commitLogMaxOffset".into(),
                self.log.published().to_string(),
            ),
            (
                "commitLogFlushedOffset".into(),
                self.log.flushed().to_string(),
            ),
            (
                "commitLogDiskRatio".into(),
                format!("{:.4}", self.disk_usage()),
            ),
            (
                "diskFull".into(),
                self.disk_full().unwrap_or_else(|| "false".into()),
            ),
            ("fsyncCount".into(), self.log.fsync_count().to_string()),
            (
                "putTps".into(),
                format!("{put_tps:.2} {put_tps:.2} {put_tps:.2}"),
            ),
            (
                "getTransferredTps".into(),
                format!("{get_tps:.2} {get_tps:.2} {get_tps:.2}"),
            ),
            (
                "msgPutTotalTodayNow".into(),
                self.stats.put_total.load(Ordering::Relaxed).to_string(),
            ),
            (
                "msgGetTotalTodayNow".into(),
                self.stats.get_total.load(Ordering::Relaxed).to_string(),
            ),
            (
                "flushDiskType".into(),
                format!("{:?}", self.cfg.flush_disk_type),
            ),
            (
                "slaveReadTotal".into(),
                self.stats
                    .slave_read_total
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "damagedRecords".into(),
                self.stats
                    .damaged_records
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "deletedSegments".into(),
                self.stats
                    .deleted_segments
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "snapshotBase".into(),
                self.snapshot_base.load(Ordering::Relaxed).to_string(),
            ),
            ("recoveryReplayedRecords".into(), r.records.to_string()),
            ("recoveryMs".into(), r.elapsed_ms.to_string()),
            ("brokerRole".into(), self.cfg.broker_role.as_str().into()),
            ("brokerId".into(), self.cfg.broker_id.to_string()),
            ("haMasterAddr".into(), ha.master_ha_addr),
            ("haConnected".into(), ha.connected.to_string()),
            ("haMasterEnd".into(), ha.master_end.to_string()),
            (
                "haRoundTrips".into(),
                self.replicas
                    .round_trips
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "haSlaves".into(),
                self.replicas
                    .snapshot()
                    .iter()
                    .map(|p| {
                        format!(
                            "{},{},{},{}",
                            p.broker_id,
                            p.addr,
                            p.acked,
                            self.log.published() - p.acked
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
        ]
    }
}

impl Store {
    /// Log bytes appended but not yet in consume queues.
    pub fn dispatch_behind(&self) -> i64 {
        let w = self.writer.lock();
        w.pending
            .front()
            .map(|p| w.tail.pos - p.entry.phys)
            .unwrap_or(0)
    }
}
