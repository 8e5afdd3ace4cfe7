//! A store on a small tmpfs: a full disk refuses sends with Apache's disk-full error, the node
//! stays up and serves what it acknowledged, sends resume once space is back, and the node
//! restarts on a full disk. Needs root (it mounts a tmpfs), as CI runs.

use rmq_e2e::Standalone;
use rmq_e2e::clients;
use rocketmq::Producer;
use rocketmq::model::common::{FilterExpression, FilterType};
use rocketmq::model::message::MessageBuilder;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const TOPIC: &str = "Full";
const BODY: usize = 32 * 1024;

/// The node and the tmpfs under its data folder; unmounted after the node is killed, before
/// its temporary directory is removed.
struct NodeOnTmpfs {
    s: Standalone,
    mount: PathBuf,
}

impl Drop for NodeOnTmpfs {
    fn drop(&mut self) {
        self.s.proc.kill9();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) {
    std::fs::create_dir_all(at).expect("mount point");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .expect("run mount");
    assert!(
        st.success(),
        "mounting a tmpfs needs root (CI runs as root): {st}"
    );
}

/// Writes `bytes` of filler (or until the disk is full when `None`).
fn fill(path: &Path, bytes: Option<usize>) {
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0;
    loop {
        if bytes.is_some_and(|b| written >= b) {
            break;
        }
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len(),
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                // Fill the last pages too.
                for _ in 0..256 {
                    if f.write_all(&chunk[..4096]).is_err() {
                        break;
                    }
                }
                break;
            }
            Err(e) => panic!("filler: {e}"),
        }
    }
    let _ = f.sync_all();
}

fn body(i: u32) -> Vec<u8> {
    let mut b: Vec<u8> = (0..BODY).map(|_| rand::random::<u8>()).collect();
    b[..4].copy_from_slice(&i.to_be_bytes());
    b
}

async fn send(p: &Producer, i: u32, acked: &mut HashMap<u32, Vec<u8>>) -> Result<(), String> {
    let b = body(i);
    let msg = MessageBuilder::builder()
        .set_topic(TOPIC)
        .set_body(b.clone())
        .build()
        .expect("message");
    match tokio::time::timeout(Duration::from_secs(15), p.send(msg)).await {
        Ok(Ok(_)) => {
            acked.insert(i, b);
            Ok(())
        }
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("send timed out".into()),
    }
}

/// Sends until the first refusal (bounded); returns its text.
async fn send_until_refused(
    p: &Producer,
    next: &mut u32,
    acked: &mut HashMap<u32, Vec<u8>>,
) -> String {
    for _ in 0..4000 {
        *next += 1;
        if let Err(e) = send(p, *next, acked).await {
            return e;
        }
    }
    panic!("the disk never filled ({} acked)", acked.len());
}

/// Sends are accepted again within a bounded wait.
async fn wait_accepted(p: &Producer, next: &mut u32, acked: &mut HashMap<u32, Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        *next += 1;
        match send(p, *next, acked).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("sends never resumed: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// Every acknowledged message is delivered intact (acks are state records: they must work on
/// a full disk too).
async fn assert_all_readable(s: &Standalone, group: &str, acked: &HashMap<u32, Vec<u8>>) {
    let c = clients::simple_consumer(&s.access_url(), group, TOPIC, Duration::from_secs(8)).await;
    let mut seen: HashMap<u32, Vec<u8>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && seen.len() < acked.len() {
        let got = c
            .receive_with(
                TOPIC,
                &FilterExpression::new(FilterType::Tag, "*"),
                32,
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("receive on a full disk: {e:?}\n{}", s.proc.log_text()));
        for m in got {
            let i = u32::from_be_bytes(m.body()[..4].try_into().expect("marker"));
            seen.insert(i, m.body().to_vec());
            c.ack(&m).await.expect("ack");
        }
    }
    let missing: Vec<&u32> = acked.keys().filter(|i| !seen.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "acked messages not readable: {missing:?}"
    );
    for (i, b) in acked {
        assert!(seen.get(i) == Some(b), "message {i} intact");
    }
}

fn assert_disk_full_error(e: &str) {
    assert!(e.contains("INTERNAL_SERVER_ERROR"), "Apache's code: {e}");
    assert!(e.contains("disk is full"), "Apache's wording: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_serves_reads_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    mount_tmpfs(&data, "48m");
    // Unmounts even if the node never starts (the guard below does it otherwise, first).
    let _unmount = Unmount(data.clone());
    let s = Standalone::start_in(
        dir,
        &[
            "--set",
            "mappedFileSizeCommitLog=8388608",
            "--set",
            "cleanFileForciblyEnable=false",
        ],
    );
    let mut node = NodeOnTmpfs {
        s,
        mount: data.clone(),
    };
    node.s.create_topic(TOPIC, &["-r", "2", "-w", "2"]);
    let filler = data.join("filler");
    fill(&filler, Some(20 << 20));

    let p = clients::producer(&node.s.access_url(), TOPIC).await;
    let mut acked = HashMap::new();
    let mut next = 0u32;
    let e = send_until_refused(&p, &mut next, &mut acked).await;
    assert_disk_full_error(&e);
    assert!(
        acked.len() > 100,
        "sends went through before the disk filled"
    );
    eprintln!("refused after {} acked: {e}", acked.len());

    // Still up, still serving, and still refusing clearly.
    let again = send(&p, next + 1, &mut acked)
        .await
        .expect_err("still full");
    assert_disk_full_error(&again);
    next += 1;
    assert_all_readable(&node.s, "ReaderFull", &acked).await;

    // Space back: sends resume by themselves.
    std::fs::remove_file(&filler).expect("free space");
    wait_accepted(&p, &mut next, &mut acked).await;
    for _ in 0..20 {
        next += 1;
        send(&p, next, &mut acked)
            .await
            .expect("accepted with space");
    }

    // Fill the disk to the last page, kill -9, restart on the full disk.
    fill(&filler, None);
    drop(p);
    node.s.restart();
    assert_all_readable(&node.s, "ReaderAfterRestart", &acked).await;
    let p = clients::producer(&node.s.access_url(), TOPIC).await;
    let e = send(&p, next + 1, &mut acked)
        .await
        .expect_err("full after restart");
    next += 1;
    assert_disk_full_error(&e);
    std::fs::remove_file(&filler).expect("free space");
    wait_accepted(&p, &mut next, &mut acked).await;
    assert_all_readable(&node.s, "ReaderAtEnd", &acked).await;
}
