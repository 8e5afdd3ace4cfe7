//! The catalog part: topic and consumer-group configuration.

use super::record::{Kind, group_from_proto, topic_from_proto};
use super::{GroupCfg, TopicCfg};
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub topics: BTreeMap<String, TopicCfg>,
    pub groups: BTreeMap<String, GroupCfg>,
    /// End of the last log record applied here.
    pub applied_to: i64,
}

impl Catalog {
    /// Whether `kind` belongs to this part.
    pub fn owns(kind: &Kind) -> bool {
        matches!(
            kind,
            Kind::Topic(_) | Kind::TopicDelete(_) | Kind::Group(_) | Kind::GroupDelete(_)
        )
    }

    pub fn apply(&mut self, kind: &Kind) {
        match kind {
            Kind::Topic(t) => {
                let cfg = topic_from_proto(t.clone());
                self.topics.insert(cfg.name.clone(), cfg);
            }
            Kind::TopicDelete(name) => {
                self.topics.remove(name);
            }
            Kind::Group(g) => {
                let cfg = group_from_proto(g.clone());
                self.groups.insert(cfg.name.clone(), cfg);
            }
            Kind::GroupDelete(name) => {
                self.groups.remove(name);
            }
            _ => {}
        }
    }

    pub fn to_proto(&self) -> rmq_proto::state::Catalog {
        rmq_proto::state::Catalog {
            applied_to: self.applied_to,
            topics: self
                .topics
                .values()
                .map(super::record::topic_to_proto)
                .collect(),
            groups: self
                .groups
                .values()
                .map(super::record::group_to_proto)
                .collect(),
        }
    }

    pub fn from_proto(c: rmq_proto::state::Catalog) -> Self {
        Self {
            topics: c
                .topics
                .into_iter()
                .map(|t| {
                    let cfg = topic_from_proto(t);
                    (cfg.name.clone(), cfg)
                })
                .collect(),
            groups: c
                .groups
                .into_iter()
                .map(|g| {
                    let cfg = group_from_proto(g);
                    (cfg.name.clone(), cfg)
                })
                .collect(),
            applied_to: c.applied_to,
        }
    }
}
