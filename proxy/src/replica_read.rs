//! slaveReadEnable: a master that judges a consumer far behind pops the messages (it keeps owning
//! the POP state) but leaves their bytes out, naming a slave that holds the same log. Reading them
//! there spares the master's page cache and disk, which is what Apache's `slaveReadEnable` is for.

use crate::cluster::{Cluster, Route, StoreClient, check};
use rmq_common::keys;
use rmq_common::record::RecordView;
use rmq_proto::store::{AckRequest, PoppedMessage, ReadRecordsRequest, RecordRef};
use std::time::Duration;

/// Fills in the records a pop left on a replica: from that replica, else from the node that
/// popped them. A record found nowhere stays empty; its delivery becomes visible again after its
/// invisible time, so nothing is lost.
pub async fn fill_records(
    cluster: &Cluster,
    route: &Route,
    broker: &str,
    popped_from: &StoreClient,
    replica_id: i64,
    msgs: &mut [PoppedMessage],
    timeout: Duration,
) {
    if let Some(addr) = route
        .brokers
        .get(broker)
        .and_then(|b| b.broker_addrs.get(&replica_id))
        && let Ok(replica) = cluster.store(addr)
    {
        read_into(&replica, msgs, timeout).await;
    }
    read_into(popped_from, msgs, timeout).await;
}

async fn read_into(store: &StoreClient, msgs: &mut [PoppedMessage], timeout: Duration) {
    let wanted: Vec<usize> = (0..msgs.len())
        .filter(|&i| msgs[i].record_on_replica)
        .collect();
    if wanted.is_empty() {
        return;
    }
    let refs = wanted
        .iter()
        .map(|&i| RecordRef {
            commit_log_offset: msgs[i].commit_log_offset,
            size: msgs[i].record_size,
        })
        .collect();
    let resp = match store
        .read_records(ReadRecordsRequest { refs }, timeout)
        .await
    {
        Ok(r) if check(&r.result).is_ok() => r,
        Ok(r) => {
            tracing::debug!(result = ?r.result, "replica read refused");
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "replica read failed");
            return;
        }
    };
    for (&i, rec) in wanted.iter().zip(resp.records) {
        if !rec.is_empty() {
            msgs[i].record = rec.into();
            msgs[i].record_on_replica = false;
        }
    }
}

/// The master matched a replica-read delivery by tag hash only; a first delivery whose tag string
/// differs (a hash collision) is acknowledged instead of delivered, as the master would have
/// skipped it.
pub async fn drop_tag_collisions(
    store: &StoreClient,
    group: &str,
    topic: &str,
    tags: &[String],
    msgs: &mut Vec<PoppedMessage>,
    timeout: Duration,
) {
    if tags.is_empty() {
        return;
    }
    let mut kept = Vec::with_capacity(msgs.len());
    for m in msgs.drain(..) {
        let collision = m.attempt == 1
            && !m.record.is_empty()
            && RecordView::parse(&m.record).ok().is_some_and(|v| {
                !v.property(keys::TAGS)
                    .is_some_and(|t| tags.iter().any(|x| x == t))
            });
        if !collision {
            kept.push(m);
            continue;
        }
        let ack = AckRequest {
            group: group.into(),
            topic: topic.into(),
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            token: m.token,
        };
        if let Err(e) = store.ack(ack, timeout).await {
            tracing::debug!(error = %e, "could not skip a tag-hash collision");
        }
    }
    *msgs = kept;
}
