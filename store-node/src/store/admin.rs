//! Topic and consumer-group administration.

use super::Store;
use crate::error::{Result, StoreError};
use crate::state::{GroupCfg, Kind, TopicCfg, record};

impl Store {
    pub async fn upsert_topic(&self, cfg: TopicCfg) -> Result<()> {
        if cfg.name.is_empty() || cfg.read_queue_nums < 0 || cfg.write_queue_nums < 0 {
            return Err(StoreError::BadRequest(
                "topic needs a name and non-negative queue counts".into(),
            ));
        }
        let _admin = self.admin.lock().await;
        let name = cfg.name.clone();
        let queues = cfg.read_queue_nums.max(cfg.write_queue_nums);
        let d = {
            let mut cat = self.state.catalog.write();
            self.change_catalog(&mut cat, Kind::Topic(record::topic_to_proto(&cfg)))?
        };
        self.await_change(d).await?;
        // The first queue files, so the first sends need not create them.
        let q = self.queues.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for id in 0..queues {
                if let Err(e) = q.queue_or_create(&name, id).prepare_next_file() {
                    tracing::warn!(topic = %name, queue = id, error = %e, "cannot prepare a consume-queue file");
                }
            }
        })
        .await;
        self.topics_changed.notify_waiters();
        Ok(())
    }

    /// Creates a missing topic with `defaultTopicQueueNums` queues when `autoCreateTopicEnable`
    /// is set; otherwise reports it missing.
    pub async fn auto_create_topic(&self, name: &str) -> Result<()> {
        if !self.cfg.auto_create_topic_enable {
            return Err(StoreError::TopicNotFound(name.to_string()));
        }
        rmq_common::validate::check_topic(name).map_err(StoreError::BadRequest)?;
        let n = self.cfg.default_topic_queue_nums;
        tracing::info!(topic = name, queues = n, "auto-creating topic");
        self.upsert_topic(TopicCfg {
            name: name.to_string(),
            read_queue_nums: n,
            write_queue_nums: n,
            perm: 6,
            attributes: Default::default(),
            order: false,
        })
        .await
    }

    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let d = {
            let mut cat = self.state.catalog.write();
            if !cat.topics.contains_key(name) {
                return Err(StoreError::TopicNotFound(name.to_string()));
            }
            let d = self.change_catalog(&mut cat, Kind::TopicDelete(name.into()))?;
            let mut w = self.writer.lock();
            w.queue_next.remove_topic(name);
            w.pending.retain(|p| p.topic != name);
            w.round_robin.remove(name);
            d
        };
        self.await_change(d).await?;
        let q = self.queues.clone();
        let topic = name.to_string();
        match tokio::task::spawn_blocking(move || q.remove_topic(&topic)).await {
            Ok(Err(e)) => {
                tracing::error!(topic = name, error = %e, "cannot remove the topic's consume-queue files")
            }
            Err(e) => tracing::error!(topic = name, error = %e, "consume-queue removal failed"),
            Ok(Ok(())) => {}
        }
        self.topics_changed.notify_waiters();
        Ok(())
    }

    pub async fn upsert_group(&self, cfg: GroupCfg) -> Result<()> {
        let d = {
            let mut cat = self.state.catalog.write();
            self.change_catalog(&mut cat, Kind::Group(record::group_to_proto(&cfg)))?
        };
        self.await_change(d).await
    }

    pub async fn delete_group(&self, name: &str) -> Result<()> {
        let d = {
            let mut cat = self.state.catalog.write();
            if !cat.groups.contains_key(name) {
                return Err(StoreError::GroupNotFound(name.to_string()));
            }
            self.change_catalog(&mut cat, Kind::GroupDelete(name.into()))?
        };
        self.await_change(d).await
    }

    pub fn topic(&self, name: &str) -> Option<TopicCfg> {
        self.state.catalog.read().topics.get(name).cloned()
    }

    pub fn topics(&self) -> Vec<TopicCfg> {
        self.state.catalog.read().topics.values().cloned().collect()
    }

    pub fn group(&self, name: &str) -> Option<GroupCfg> {
        self.state.catalog.read().groups.get(name).cloned()
    }

    pub fn groups(&self) -> Vec<String> {
        self.state.catalog.read().groups.keys().cloned().collect()
    }
}
