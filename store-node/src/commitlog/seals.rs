//! The seal manifest: for every segment that was complete and flushed, its length and
//! modification time then. Recovery trusts a sealed segment whose file still looks the same
//! without reading it (constant-time start), and verifies every record of one that changed —
//! which is how a flipped byte in an old segment is found before the node serves anything.

use crate::durable;
use prost::Message;
use rmq_proto::state::{DamagedRange, Seal, SealManifest};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

#[derive(Debug, Default, Clone)]
pub struct Seals {
    pub by_base: BTreeMap<i64, Seal>,
}

impl Seals {
    /// Reads the manifest; a missing one is empty, a damaged one an error (the caller then
    /// verifies every segment).
    pub fn load(path: &Path) -> Result<Self, String> {
        match durable::read_framed(path) {
            Ok(None) => Ok(Self::default()),
            Ok(Some(p)) => SealManifest::decode(p.as_slice())
                .map(|m| Self {
                    by_base: m.seals.into_iter().map(|s| (s.base, s)).collect(),
                })
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        let m = SealManifest {
            seals: self.by_base.values().cloned().collect(),
        };
        durable::write_framed(path, &m.encode_to_vec())
    }

    /// Whether the file still looks as it did when sealed.
    pub fn unchanged(&self, base: i64, meta: &std::fs::Metadata) -> bool {
        self.by_base
            .get(&base)
            .is_some_and(|s| s.length == meta.len() as i64 && s.mtime_ns == durable::mtime_ns(meta))
    }

    pub fn seal(&mut self, base: i64, meta: &std::fs::Metadata, damaged: Vec<DamagedRange>) {
        self.by_base.insert(
            base,
            Seal {
                base,
                length: meta.len() as i64,
                mtime_ns: durable::mtime_ns(meta),
                damaged,
            },
        );
    }

    /// Damage an operator accepted in this segment earlier.
    pub fn accepted_damage(&self, base: i64) -> &[DamagedRange] {
        self.by_base
            .get(&base)
            .map(|s| s.damaged.as_slice())
            .unwrap_or(&[])
    }

    /// Whether the segment was sealed (an entry can also just carry accepted damage of a
    /// segment still being written).
    pub fn is_sealed(&self, base: i64) -> bool {
        self.by_base.get(&base).is_some_and(|s| s.length > 0)
    }

    pub fn is_sealed_complete(&self, base: i64) -> bool {
        self.is_sealed(base)
    }

    pub fn forget_from(&mut self, base: i64) {
        self.by_base.retain(|b, _| *b < base);
    }

    pub fn forget_below(&mut self, base: i64) {
        self.by_base.retain(|b, _| *b >= base);
    }
}
