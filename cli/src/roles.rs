//! Starting each role from RocketMQ's files and flags. Precedence, lowest first: built-in
//! defaults, the config file, environment (`NAMESRV_ADDR`), command-line flags (`-n`, `--set`).

use rmq_common::properties_file::PropertiesFile;
use rmq_namesrv::NamesrvConfig;
use rmq_proxy::ProxyConfig;
use rmq_store_node::StoreConfig;
use rmq_store_node::config::split_namesrv;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn read_properties(path: Option<&Path>) -> Result<PropertiesFile, BoxError> {
    match path {
        None => Ok(PropertiesFile::default()),
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| format!("cannot read config file {}: {e}", p.display()))?;
            println!("load config properties file OK, {}", p.display());
            Ok(PropertiesFile::parse(&String::from_utf8_lossy(&bytes)))
        }
    }
}

fn apply_overrides(p: &mut PropertiesFile, sets: &[String]) -> Result<(), BoxError> {
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set expects key=value, got {s:?}"))?;
        p.set(k.trim(), v.trim());
    }
    Ok(())
}

fn warn_unknown(role: &str, keys: &[String]) {
    for k in keys {
        tracing::warn!("{role}: unknown configuration key {k:?} ignored");
    }
}

pub fn store_config(
    file: Option<&Path>,
    namesrv: Option<&str>,
    sets: &[String],
) -> Result<StoreConfig, BoxError> {
    let mut p = read_properties(file)?;
    if let Ok(env) = std::env::var("NAMESRV_ADDR")
        && !env.trim().is_empty()
    {
        p.set("namesrvAddr", &env);
    }
    if let Some(n) = namesrv {
        p.set("namesrvAddr", n);
    }
    apply_overrides(&mut p, sets)?;
    let mut cfg = StoreConfig::default();
    let unknown = cfg.apply(&p)?;
    warn_unknown("store", &unknown);
    Ok(cfg)
}

pub fn namesrv_config(file: Option<&Path>, sets: &[String]) -> Result<NamesrvConfig, BoxError> {
    let mut p = read_properties(file)?;
    apply_overrides(&mut p, sets)?;
    let mut cfg = NamesrvConfig::default();
    let unknown = cfg.apply(&p)?;
    warn_unknown("namesrv", &unknown);
    Ok(cfg)
}

pub fn proxy_config(
    file: Option<&Path>,
    namesrv: Option<&str>,
    sets: &[String],
) -> Result<ProxyConfig, BoxError> {
    let mut cfg = match file {
        None => ProxyConfig::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("the config file {} cannot be read: {e}", p.display()))?;
            if text.trim().is_empty() {
                return Err(format!("the config file {} length is zero", p.display()).into());
            }
            let (cfg, unknown) =
                ProxyConfig::from_json(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            warn_unknown("proxy", &unknown);
            cfg
        }
    };
    if let Ok(env) = std::env::var("NAMESRV_ADDR")
        && !env.trim().is_empty()
    {
        cfg.namesrv_addr = env;
    }
    if let Some(n) = namesrv {
        cfg.namesrv_addr = n.to_string();
    }
    for s in sets {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| format!("--set expects key=value, got {s:?}"))?;
        cfg.set(k.trim(), v.trim())?;
    }
    Ok(cfg)
}

/// Flips to true on Ctrl-C or SIGTERM.
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

pub fn spawn_metrics(host: &str, port: u16, shutdown: watch::Receiver<bool>) {
    let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() else {
        tracing::error!(%host, port, "invalid metrics address");
        return;
    };
    tokio::spawn(async move {
        let mut sd = shutdown;
        if let Err(e) = rmq_observability::serve_metrics(addr, async move {
            let _ = sd.wait_for(|v| *v).await;
        })
        .await
        {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
}

pub struct StandalonePorts {
    pub namesrv: u16,
    pub proxy: u16,
    pub metrics: u16,
}

/// Namesrv + store node + proxy in one process; the proxy calls the store in-process.
/// Standalone opens its proxy port only once the in-process name server lists the store node, so
/// an `mqadmin updateTopic -c` or a client started right after the port opens finds a master.
/// Bounded: after 5 s the proxy starts anyway (registration keeps retrying in the background).
async fn wait_registered(namesrv: &str, store_addr: &str) {
    use rmq_proto::namesrv::ClusterInfoRequest;
    use rmq_proto::namesrv::namesrv_service_client::NamesrvServiceClient;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let url = format!("http://{namesrv}");
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut c) = NamesrvServiceClient::connect(url.clone()).await
            && let Ok(info) = c.get_cluster_info(ClusterInfoRequest {}).await
            && info
                .into_inner()
                .brokers
                .iter()
                .any(|b| b.addr == store_addr)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tracing::warn!(
        "the store node has not registered with the name server yet; starting the proxy anyway"
    );
}

pub async fn run_standalone(
    mut store_cfg: StoreConfig,
    ports: StandalonePorts,
    bind: &str,
    data_dir: Option<PathBuf>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), BoxError> {
    if let Some(d) = data_dir {
        store_cfg.store_path_root_dir = d.join("store");
    }
    if store_cfg.namesrv_addr.is_empty() {
        store_cfg.namesrv_addr = split_namesrv(&format!("127.0.0.1:{}", ports.namesrv));
    }
    let ns_cfg = NamesrvConfig {
        listen_port: ports.namesrv,
        ..NamesrvConfig::default()
    };
    let proxy_cfg = ProxyConfig {
        grpc_server_port: ports.proxy,
        namesrv_addr: store_cfg.namesrv_addr.join(";"),
        rocketmq_cluster_name: store_cfg.broker_cluster_name.clone(),
        max_message_size: store_cfg.max_message_size,
        ..ProxyConfig::default()
    };
    spawn_metrics(bind, ports.metrics, shutdown.clone());
    let ns = {
        let (bind, sd) = (bind.to_string(), shutdown.clone());
        tokio::spawn(async move { rmq_namesrv::run(ns_cfg, &bind, sd).await })
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let store = {
        let (bind, sd, cfg) = (bind.to_string(), shutdown.clone(), store_cfg.clone());
        tokio::spawn(async move { rmq_store_node::run(cfg, &bind, sd, Some(ready_tx)).await })
    };
    let opened = match ready_rx.await {
        Ok(s) => s,
        Err(_) => {
            return match store.await {
                Ok(Err(e)) => Err(format!("store node failed: {e}").into()),
                _ => Err("store node failed to start".into()),
            };
        }
    };
    if let Some(ns) = store_cfg.namesrv_addr.first() {
        wait_registered(ns, &store_cfg.advertised_addr()).await;
    }
    let local: Arc<dyn rmq_proto::store::store_service_server::StoreService> =
        Arc::new(rmq_store_node::StoreGrpc::new(opened));
    let proxy = {
        let (bind, sd, addr) = (
            bind.to_string(),
            shutdown.clone(),
            store_cfg.advertised_addr(),
        );
        tokio::spawn(async move { rmq_proxy::run(proxy_cfg, &bind, Some((addr, local)), sd).await })
    };
    let (a, b, c) = tokio::join!(ns, store, proxy);
    for (name, r) in [("namesrv", a), ("store", b), ("proxy", c)] {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{name} failed: {e}").into()),
            Err(e) => return Err(format!("{name} task failed: {e}").into()),
        }
    }
    Ok(())
}
