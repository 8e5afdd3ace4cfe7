//! The workloads of performance.md §4.2. Closed loops measure maximum throughput; open loops
//! measure latency from the *intended* send time, so a stall cannot hide (no coordinated omission).

use crate::drivers::{self, Nats};
use crate::measure::{Run, histogram};
use crate::systems::TOPIC;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Our proxy or the echo ceiling: v2 SendMessage with `batch` messages per RPC.
    V2 {
        port: u16,
        batch: usize,
    },
    Nats {
        port: u16,
    },
    /// The official Rust client (`rocketmq` 5.x), one Producer per 8 senders, one message per
    /// send (it has no batch send).
    Official {
        port: u16,
    },
}

fn body(size: usize) -> bytes::Bytes {
    bytes::Bytes::from(
        (0..size)
            .map(|i| b'a' + (i % 26) as u8)
            .collect::<Vec<u8>>(),
    )
}

pub async fn prepare_nats(port: u16) -> Result<(), String> {
    let mut n = Nats::connect(port).await?;
    n.create_stream().await
}

/// `senders` concurrent request loops for `dur`; one gRPC connection per 8 senders.
pub async fn closed_loop(target: Target, senders: usize, size: usize, dur: Duration) -> Run {
    let payload = body(size);
    let deadline = Instant::now() + dur;
    let start = Instant::now();
    let mut tasks = Vec::new();
    match target {
        Target::V2 { port, batch } => {
            let mut chans = Vec::new();
            for _ in 0..senders.div_ceil(8) {
                match drivers::channel(port).await {
                    Ok(c) => chans.push(c),
                    Err(e) => {
                        return Run {
                            errors: 1,
                            extra: e,
                            ..Run::default()
                        };
                    }
                }
            }
            for i in 0..senders {
                let mut c = chans[i / 8].clone();
                let payload = payload.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut h, mut ok, mut err) = (histogram(), 0u64, 0u64);
                    let mut first = None;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match drivers::send(&mut c, TOPIC, &payload, batch).await {
                            Ok(()) => {
                                ok += batch as u64;
                                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                            }
                            Err(e) => {
                                err += 1;
                                first.get_or_insert(e);
                            }
                        }
                    }
                    (h, ok, err, first)
                }));
            }
        }
        Target::Official { port } => {
            let mut producers = Vec::new();
            for _ in 0..senders.div_ceil(8) {
                match drivers::official_producer(port).await {
                    Ok(p) => producers.push(Arc::new(p)),
                    Err(e) => {
                        return Run {
                            errors: 1,
                            extra: e,
                            ..Run::default()
                        };
                    }
                }
            }
            for i in 0..senders {
                let p = producers[i / 8].clone();
                let payload = payload.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut h, mut ok, mut err) = (histogram(), 0u64, 0u64);
                    let mut first = None;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match drivers::official_send(&p, TOPIC, &payload).await {
                            Ok(()) => {
                                ok += 1;
                                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                            }
                            Err(e) => {
                                err += 1;
                                first.get_or_insert(e);
                            }
                        }
                    }
                    (h, ok, err, first)
                }));
            }
        }
        Target::Nats { port } => {
            for _ in 0..senders {
                let payload = payload.clone();
                tasks.push(tokio::spawn(async move {
                    let (mut h, mut ok, mut err) = (histogram(), 0u64, 0u64);
                    let Ok(mut n) = Nats::connect(port).await else {
                        return (h, 0, 1, Some("NATS connect failed".to_string()));
                    };
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match n.request("bench.w", &payload).await {
                            Ok(_) => {
                                ok += 1;
                                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                            }
                            Err(_) => err += 1,
                        }
                    }
                    (h, ok, err, None)
                }));
            }
        }
    }
    let mut run = Run::default();
    for t in tasks {
        if let Ok((h, ok, err, first)) = t.await {
            let _ = run.hist.add(&h);
            run.msgs += ok;
            run.errors += err;
            if let Some(e) = first
                && run.extra.is_empty()
            {
                run.extra = format!("first error: {e}");
            }
        }
    }
    run.elapsed = start.elapsed();
    run.bytes = run.msgs * size as u64;
    run
}

/// Fixed-rate sends for `dur`, latency measured from each send's intended start.
pub async fn open_loop(port: u16, rate: f64, size: usize, dur: Duration) -> Run {
    let payload = body(size);
    let mut chans = Vec::new();
    for _ in 0..8 {
        match drivers::channel(port).await {
            Ok(c) => chans.push(c),
            Err(e) => {
                return Run {
                    errors: 1,
                    extra: e,
                    ..Run::default()
                };
            }
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<u64, ()>>();
    let start = tokio::time::Instant::now();
    let total = (rate * dur.as_secs_f64()) as u64;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    for i in 0..total {
        let intended = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(intended).await;
        let mut c = chans[(i % 8) as usize].clone();
        let payload = payload.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = drivers::send(&mut c, TOPIC, &payload, 1).await;
            let lat = intended.elapsed().as_micros().max(1) as u64;
            let _ = tx.send(r.map(|_| lat).map_err(|_| ()));
        });
    }
    drop(tx);
    let mut run = Run::default();
    while let Some(r) = rx.recv().await {
        match r {
            Ok(l) => {
                run.msgs += 1;
                let _ = run.hist.record(l);
            }
            Err(()) => run.errors += 1,
        }
    }
    run.elapsed = start.elapsed();
    run.bytes = run.msgs * size as u64;
    run
}

/// Messages produced at `rate` carry their send time; consumers long-poll and ack. Latency is
/// publish → delivered. `lost` counts sent messages never received.
pub async fn end_to_end(port: u16, rate: f64, dur: Duration, consumers: usize, group: &str) -> Run {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (htx, mut hrx) = tokio::sync::mpsc::unbounded_channel::<Histogram<u64>>();
    let mut cons = Vec::new();
    for _ in 0..consumers {
        let (received, stop, htx, group) = (
            received.clone(),
            stop.clone(),
            htx.clone(),
            group.to_string(),
        );
        let Ok(mut c) = drivers::channel(port).await else {
            continue;
        };
        cons.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match drivers::receive_and_ack(&mut c, TOPIC, &group, 5000).await {
                    Ok(bodies) => {
                        let now = crate::drivers::now_us();
                        for b in bodies {
                            if let Some(sent) = std::str::from_utf8(&b[..16.min(b.len())])
                                .ok()
                                .and_then(|s| s.trim().parse::<u64>().ok())
                            {
                                let _ = h.record(now.saturating_sub(sent).max(1));
                            }
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            let _ = htx.send(h);
            errors
        }));
    }
    drop(htx);
    // Open loop: each send starts at its scheduled time on its own task (up to 1024 in flight,
    // over 8 connections), and carries that *intended* time, so a slow send cannot thin out the
    // load or hide its delay (no coordinated omission).
    let mut producers = Vec::new();
    for _ in 0..8 {
        match drivers::channel(port).await {
            Ok(p) => producers.push(p),
            Err(_) => {
                return Run {
                    errors: 1,
                    ..Run::default()
                };
            }
        }
    }
    let sent_ok = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let start = tokio::time::Instant::now();
    let epoch_start = crate::drivers::now_us();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (rate * dur.as_secs_f64()) as u64;
    let mut sends = Vec::with_capacity(total as usize);
    for i in 0..total {
        let offset = interval.mul_f64(i as f64);
        tokio::time::sleep_until(start + offset).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let mut b = format!("{:016}", epoch_start + offset.as_micros() as u64).into_bytes();
        b.resize(1024, b'x');
        let mut p = producers[i as usize % producers.len()].clone();
        let (ok, bad) = (sent_ok.clone(), send_errors.clone());
        sends.push(tokio::spawn(async move {
            match drivers::send(&mut p, TOPIC, &bytes::Bytes::from(b), 1).await {
                Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => bad.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        }));
    }
    for s in sends {
        let _ = s.await;
    }
    let sent = sent_ok.load(Ordering::Relaxed);
    let mut errors = send_errors.load(Ordering::Relaxed);
    let drain = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in cons {
        errors += c.await.unwrap_or(1);
    }
    let mut run = Run::default();
    while let Some(h) = hrx.recv().await {
        let _ = run.hist.add(&h);
    }
    let got = received.load(Ordering::Relaxed);
    run.msgs = got;
    run.errors = errors;
    run.lost = sent.saturating_sub(got);
    run.elapsed = start.elapsed();
    run.bytes = got * 1024;
    run
}

/// Consumes until `expect` messages arrived (or `budget` passed) with `consumers` receive+ack loops.
pub async fn drain(port: u16, group: &str, expect: u64, consumers: usize, budget: Duration) -> Run {
    let got = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let done_us = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + budget;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (got, bytes, group, done_us) = (
            got.clone(),
            bytes.clone(),
            group.to_string(),
            done_us.clone(),
        );
        let Ok(mut c) = drivers::channel(port).await else {
            continue;
        };
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0;
            while got.load(Ordering::Relaxed) < expect && Instant::now() < deadline {
                let t = Instant::now();
                match drivers::receive_and_ack(&mut c, TOPIC, &group, 5000).await {
                    Ok(b) => {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                        bytes.fetch_add(b.iter().map(|x| x.len() as u64).sum(), Ordering::Relaxed);
                        let total =
                            got.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                        if std::env::var_os("RMQ_BENCH_DEBUG").is_some() {
                            eprintln!(
                                "drain: +{} = {total} after {:?} (call {:?})",
                                b.len(),
                                start.elapsed(),
                                t.elapsed()
                            );
                        }
                        if total >= expect && total - (b.len() as u64) < expect {
                            done_us
                                .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (h, errors)
        }));
    }
    let mut run = Run::default();
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = run.hist.add(&h);
            run.errors += e;
        }
    }
    let done = done_us.load(Ordering::Relaxed);
    run.elapsed = if done > 0 {
        Duration::from_micros(done)
    } else {
        start.elapsed()
    };
    run.msgs = got.load(Ordering::Relaxed);
    run.bytes = bytes.load(Ordering::Relaxed);
    run.lost = expect.saturating_sub(run.msgs);
    run
}

/// Sends one message until the first acknowledgement (a system still starting refuses or does
/// not answer yet), polling every 2 ms within `budget`; whether it came.
pub async fn until_first_ack(port: u16, payload: &bytes::Bytes, budget: Duration) -> bool {
    let deadline = Instant::now() + budget;
    while Instant::now() < deadline {
        if let Ok(mut c) = drivers::channel(port).await
            && drivers::send(&mut c, TOPIC, payload, 1).await.is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// Produces `count` messages of `size` bytes as fast as possible (batches of 16, 8 senders).
pub async fn preload(port: u16, count: u64, size: usize) -> Result<(), String> {
    let payload = body(size);
    let left = Arc::new(AtomicU64::new(count.div_ceil(16)));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = drivers::channel(port).await?;
        let (left, payload) = (left.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
                .is_ok()
            {
                drivers::send(&mut c, TOPIC, &payload, 16).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
