//! Coalesces concurrent sends bound for one store node into shared `Append` RPCs.
//!
//! callgrind on the split deployment (W8) showed the proxy spending more per message on the
//! client half of the store RPC (h2 framing, headers, a task per call) than on the client's own
//! RPC; sends arriving while earlier appends are in flight now ride one RPC together. Order is
//! kept within a batch, and a send is only enqueued after the client's previous send of the same
//! message group was acknowledged, so FIFO order holds across batches too.

use crate::error::ProxyError;
use rmq_proto::store::store_service_client::StoreServiceClient;
use rmq_proto::store::{AppendRequest, AppendResponse, StoreMessage};
use rmq_proto::v2::Code;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::transport::Channel;

/// Appends in flight per store node; further sends queue up and leave together.
const IN_FLIGHT: usize = 4;
/// Upper bounds of one coalesced RPC.
const MAX_MESSAGES: usize = 512;
const MAX_BYTES: usize = 8 * 1024 * 1024;
const QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<AppendResponse, ProxyError>>;

struct Pending {
    msgs: Vec<StoreMessage>,
    timeout: Duration,
    reply: Reply,
}

#[derive(Clone)]
pub struct Coalescer {
    tx: mpsc::Sender<Pending>,
    rpcs: Arc<AtomicU64>,
}

impl Coalescer {
    pub fn new(client: StoreServiceClient<Channel>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let rpcs = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(client, rx, rpcs.clone()));
        Self { tx, rpcs }
    }

    /// Batches formed so far, each one Append RPC (fewer than the sends when they were shared;
    /// a batch split up after a refusal costs one more RPC per send, not counted here).
    pub fn rpcs(&self) -> u64 {
        self.rpcs.load(Ordering::Relaxed)
    }

    pub async fn append(
        &self,
        req: AppendRequest,
        timeout: Duration,
    ) -> Result<AppendResponse, ProxyError> {
        let (reply, rx) = oneshot::channel();
        let p = Pending {
            msgs: req.messages,
            timeout,
            reply,
        };
        self.tx
            .send(p)
            .await
            .map_err(|_| ProxyError::Internal("append queue closed".into()))?;
        rx.await
            .map_err(|_| ProxyError::Internal("append dropped".into()))?
    }
}

async fn run(
    client: StoreServiceClient<Channel>,
    mut rx: mpsc::Receiver<Pending>,
    rpcs: Arc<AtomicU64>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes: usize = first.msgs.iter().map(|m| m.body.len()).sum();
        let mut count = first.msgs.len();
        let mut batch = vec![first];
        while count < MAX_MESSAGES && bytes < MAX_BYTES {
            let Ok(p) = rx.try_recv() else { break };
            let b: usize = p.msgs.iter().map(|m| m.body.len()).sum();
            if count + p.msgs.len() > MAX_MESSAGES || bytes + b > MAX_BYTES {
                carry = Some(p);
                break;
            }
            count += p.msgs.len();
            bytes += b;
            batch.push(p);
        }
        let client = client.clone();
        rpcs.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            send(client, batch).await;
            drop(permit);
        });
    }
}

/// Codes a store answers after checking a batch and before writing any of it, for a fault that
/// may lie in one send alone (a topic unknown here, a body too large): each send of such a batch
/// is tried again on its own so that one client's mistake does not fail the others.
fn refused_before_writing(code: i32) -> bool {
    [
        Code::TopicNotFound,
        Code::Forbidden,
        Code::BadRequest,
        Code::MessageBodyTooLarge,
    ]
    .iter()
    .any(|c| *c as i32 == code)
}

async fn send(client: StoreServiceClient<Channel>, batch: Vec<Pending>) {
    if batch.len() == 1 {
        send_batch(client, batch).await;
        return;
    }
    let copies: Vec<(Vec<StoreMessage>, Duration)> =
        batch.iter().map(|p| (p.msgs.clone(), p.timeout)).collect();
    let (replies, outcome) = send_batch_raw(client.clone(), batch).await;
    let isolate = matches!(&outcome, Ok(r) if r.result.as_ref().is_some_and(|x| refused_before_writing(x.code)));
    if !isolate {
        deliver(replies, outcome);
        return;
    }
    for ((_, reply), (msgs, timeout)) in replies.into_iter().zip(copies) {
        let one = Pending {
            msgs,
            timeout,
            reply,
        };
        send_batch(client.clone(), vec![one]).await;
    }
}

async fn send_batch(client: StoreServiceClient<Channel>, batch: Vec<Pending>) {
    let (replies, outcome) = send_batch_raw(client, batch).await;
    deliver(replies, outcome);
}

type Outcome = Result<AppendResponse, ProxyError>;

async fn send_batch_raw(
    mut client: StoreServiceClient<Channel>,
    batch: Vec<Pending>,
) -> (Vec<(usize, Reply)>, Outcome) {
    let timeout = batch
        .iter()
        .map(|p| p.timeout)
        .min()
        .unwrap_or(Duration::from_secs(10));
    let mut replies = Vec::with_capacity(batch.len());
    let mut messages = Vec::new();
    for p in batch {
        replies.push((p.msgs.len(), p.reply));
        messages.extend(p.msgs);
    }
    let mut req = tonic::Request::new(AppendRequest { messages });
    req.set_timeout(timeout);
    let result =
        match tokio::time::timeout(timeout + Duration::from_secs(1), client.append(req)).await {
            Err(_) => Err(ProxyError::StoreTimeout),
            Ok(Err(status)) => Err(ProxyError::from(status)),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        };
    (replies, result)
}

/// Hands each send its share of the outcome: its own entries, or the batch's error.
fn deliver(replies: Vec<(usize, Reply)>, result: Outcome) {
    match result {
        Err(e) => {
            for (_, r) in replies {
                let _ = r.send(Err(e.clone()));
            }
        }
        Ok(resp) => {
            let ok = resp
                .result
                .as_ref()
                .is_some_and(|r| r.code == Code::Ok as i32);
            let mut entries = resp.entries.into_iter();
            for (n, r) in replies {
                let part = AppendResponse {
                    result: resp.result.clone(),
                    refused_before_write: resp.refused_before_write,
                    entries: if ok {
                        entries.by_ref().take(n).collect()
                    } else {
                        Vec::new()
                    },
                };
                let _ = r.send(Ok(part));
            }
        }
    }
}
