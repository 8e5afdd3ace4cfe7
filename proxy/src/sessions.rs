//! Client sessions: the Settings each client sent over Telemetry, and the streams the proxy can
//! write commands to. A session is dropped only by NotifyClientTermination, never because one of
//! a client's Telemetry streams closed (Rust 5.0.0 cancels its extra streams after one RPC).

use parking_lot::Mutex;
use rmq_proto::v2::{Settings, TelemetryCommand};
use std::collections::HashMap;
use tokio::sync::mpsc;

#[derive(Default)]
struct Session {
    settings: Option<Settings>,
    streams: Vec<(u64, mpsc::Sender<Result<TelemetryCommand, tonic::Status>>)>,
}

#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Session>>,
    next_stream: Mutex<u64>,
}

impl Sessions {
    pub fn set_settings(&self, client_id: &str, s: Settings) {
        self.inner
            .lock()
            .entry(client_id.to_string())
            .or_default()
            .settings = Some(s);
    }

    pub fn settings(&self, client_id: &str) -> Option<Settings> {
        self.inner
            .lock()
            .get(client_id)
            .and_then(|s| s.settings.clone())
    }

    /// The client's request timeout in ms (3 s when unknown, the SDKs' default).
    pub fn request_timeout_ms(&self, client_id: &str) -> i64 {
        self.settings(client_id)
            .and_then(|s| s.request_timeout)
            .map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000)
            .filter(|v| *v > 0)
            .unwrap_or(3000)
    }

    pub fn add_stream(
        &self,
        client_id: &str,
        tx: mpsc::Sender<Result<TelemetryCommand, tonic::Status>>,
    ) -> u64 {
        let id = {
            let mut n = self.next_stream.lock();
            *n += 1;
            *n
        };
        self.inner
            .lock()
            .entry(client_id.to_string())
            .or_default()
            .streams
            .push((id, tx));
        id
    }

    pub fn remove_stream(&self, client_id: &str, id: u64) {
        if let Some(s) = self.inner.lock().get_mut(client_id) {
            s.streams.retain(|(i, _)| *i != id);
        }
    }

    pub fn remove(&self, client_id: &str) {
        self.inner.lock().remove(client_id);
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
